"""The request schema and the service's guard read one table of limits: both accept its bound, both refuse one past it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gpufleet import limits
from gpufleet.domain.jobs import JobSpec
from gpufleet.errors import InvalidInput
from gpufleet.schemas.jobs import JobCreate, QuotaSet
from gpufleet.services.job_spec import validate
from tests.factories import changed

OK = JobSpec(name="train", command=["python", "train.py"])
BODY: dict[str, Any] = {"name": "train", "command": ["python", "train.py"]}


@pytest.mark.parametrize(
    ("field", "bound"),
    [
        ("gpu_count", limits.MAX_GPUS),
        ("priority", limits.MAX_PRIORITY),
        ("max_runtime_s", limits.MAX_RUNTIME_S),
        ("name", "x" * limits.MAX_JOB_NAME),
        ("labels", {f"k{i}": "v" for i in range(limits.MAX_LABELS)}),
    ],
)
def test_schema_and_service_share_each_bound(field: str, bound: Any) -> None:
    over = bound + 1 if isinstance(bound, int) else bound + "x" if isinstance(bound, str) else {**bound, "one": "more"}
    assert validate(JobCreate.model_validate({**BODY, field: bound}).to_spec())
    with pytest.raises(ValidationError) as schema_err:
        JobCreate.model_validate({**BODY, field: over})
    assert schema_err.value.errors()[0]["loc"][0] == field
    assert validate(changed(OK, **{field: bound}))
    with pytest.raises(InvalidInput) as service_err:
        validate(changed(OK, **{field: over}))
    assert service_err.value.extra["field"] == field and str(service_err.value).startswith(f"{field}: ")


def test_quota_bound_is_the_schemas() -> None:
    assert QuotaSet.model_validate({"max_gpus": limits.MAX_QUOTA_GPUS}).max_gpus == limits.MAX_QUOTA_GPUS
    with pytest.raises(ValidationError):
        QuotaSet.model_validate({"max_gpus": limits.MAX_QUOTA_GPUS + 1})

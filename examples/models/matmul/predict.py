"""Matmul: multiplies two random square matrices and reports the backend, the device and the speed.

Uses PyTorch when it can be imported (on the GPU when one is visible: CUDA_VISIBLE_DEVICES is set
by gpufleet to the GPUs of the replica), else NumPy, else plain Python (small sizes only).
"""

import random
import time

from cog import BasePredictor, Input


def _python_matmul(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    columns = list(zip(*b))
    return [[sum(x * y for x, y in zip(row, col)) for col in columns] for row in a]


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.torch = self.numpy = None
        self.device = "cpu"
        self.device_name = "cpu"
        try:
            import torch

            self.torch = torch
            if torch.cuda.is_available():
                self.device = "cuda"
                self.device_name = torch.cuda.get_device_name(0)
        except ImportError:
            try:
                import numpy

                self.numpy = numpy
            except ImportError:
                pass
        self.backend = "torch" if self.torch else "numpy" if self.numpy else "python"
        print(f"matmul: {self.backend} on {self.device_name}", flush=True)

    def predict(
        self,
        size: int = Input(description="Rows (and columns) of each matrix", default=256, ge=1, le=16384),
        iterations: int = Input(description="Timed multiplications", default=3, ge=1, le=1000),
        dtype: str = Input(description="Element type", default="float32", choices=["float32", "float64", "float16"]),
        seed: int = Input(description="Random seed of the matrices", default=0),
    ) -> dict:
        if self.backend == "python" and size > 256:
            raise ValueError("without PyTorch or NumPy, size is limited to 256 (plain Python is slow)")
        if self.backend == "torch":
            torch = self.torch
            kind = getattr(torch, dtype)
            if self.device == "cpu" and kind is torch.float16:
                kind = torch.float32  # half precision matmul is a GPU feature
            gen = torch.Generator(device="cpu").manual_seed(seed)
            a = torch.rand(size, size, generator=gen, dtype=torch.float32).to(self.device, kind)
            b = torch.rand(size, size, generator=gen, dtype=torch.float32).to(self.device, kind)
            c = a @ b  # warm-up (kernel selection, allocation)
            if self.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(iterations):
                c = a @ b
            if self.device == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            checksum = float(c.float().sum().item())
            dtype = str(kind).removeprefix("torch.")
        elif self.backend == "numpy":
            np = self.numpy
            if dtype == "float16":
                dtype = "float32"
            rng = np.random.default_rng(seed)
            a = rng.random((size, size)).astype(dtype)
            b = rng.random((size, size)).astype(dtype)
            c = a @ b
            start = time.perf_counter()
            for _ in range(iterations):
                c = a @ b
            elapsed = time.perf_counter() - start
            checksum = float(c.sum())
        else:
            rng = random.Random(seed)
            a = [[rng.random() for _ in range(size)] for _ in range(size)]
            b = [[rng.random() for _ in range(size)] for _ in range(size)]
            start = time.perf_counter()
            for _ in range(iterations):
                c = _python_matmul(a, b)
            elapsed = time.perf_counter() - start
            checksum = float(sum(map(sum, c)))
            dtype = "float64"
        per = elapsed / iterations
        return {
            "backend": self.backend,
            "device": self.device,
            "device_name": self.device_name,
            "dtype": dtype,
            "size": size,
            "iterations": iterations,
            "seconds_per_iteration": per,
            "gflops": (2 * size**3) / per / 1e9 if per > 0 else None,
            "checksum": checksum,
        }

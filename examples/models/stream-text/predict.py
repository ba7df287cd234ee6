"""Stream text: yields the text back one word at a time, as a language model streams tokens."""

import time

from cog import BasePredictor, ConcatenateIterator, Input


class Predictor(BasePredictor):
    def predict(
        self,
        text: str = Input(
            description="The text to stream", default="The quick brown fox jumps over the lazy dog.", max_length=10000
        ),
        delay: float = Input(description="Seconds between tokens", default=0.05, ge=0, le=5),
        repeat: int = Input(description="How many times to stream the text", default=1, ge=1, le=100),
    ) -> ConcatenateIterator[str]:
        words = text.split(" ")
        for r in range(repeat):
            for i, word in enumerate(words):
                last = r == repeat - 1 and i == len(words) - 1
                yield word if last else word + " "
                if delay:
                    time.sleep(delay)

"""Text generation: a bigram language model built in setup() from a small built-in corpus.

It stands in for a real LLM: setup() "loads the weights" once, predict() streams tokens, and the
same prompt, temperature and seed always give the same text.
"""

import math
import random
from collections import Counter, defaultdict

from cog import BasePredictor, ConcatenateIterator, Input

CORPUS = """
the fleet runs jobs on gpus . the scheduler places each job on a host with free gpus .
a model is a directory with a predictor . the predictor loads its weights once in setup .
each prediction runs the model on one input and returns its output .
replicas of a model wait for predictions . when no prediction comes the replicas scale to zero .
a cold start loads the model again . a warm replica answers at once .
the agent on each host starts the worker and reports back to the server .
the server keeps every prediction in the database and streams the output to the client .
gpus are shared between replicas when a model needs only a part of one gpu .
the quick brown fox jumps over the lazy dog . the dog sleeps and the fox runs away .
"""


class Predictor(BasePredictor):
    def setup(self) -> None:
        words = CORPUS.split()
        self.next_words: dict[str, Counter[str]] = defaultdict(Counter)
        for a, b in zip(words, words[1:]):
            self.next_words[a][b] += 1
        self.vocabulary = sorted(set(words))

    def _pick(self, word: str, temperature: float, rng: random.Random) -> str:
        choices = self.next_words.get(word) or Counter(self.vocabulary)
        ranked = sorted(choices.items())
        if temperature == 0:
            return max(ranked, key=lambda kv: kv[1])[0]
        weights = [math.exp(math.log(count) / temperature) for _, count in ranked]
        return rng.choices([w for w, _ in ranked], weights=weights)[0]

    def predict(
        self,
        prompt: str = Input(description="How the text starts", default="the fleet", max_length=2000),
        max_tokens: int = Input(description="Words to generate", default=40, ge=1, le=2000),
        temperature: float = Input(description="0: always the likeliest word; higher: more varied", default=0.8, ge=0, le=5),
        seed: int = Input(description="The same seed gives the same text", default=0),
    ) -> ConcatenateIterator[str]:
        rng = random.Random(seed)
        words = prompt.lower().split()
        word = words[-1] if words else "the"
        for _ in range(max_tokens):
            word = self._pick(word, temperature, rng)
            yield " " + word

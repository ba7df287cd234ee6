"""Echo: returns its text, shaped by typed and constrained inputs (Cog's Input options)."""

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.prefix = ""

    def predict(
        self,
        text: str = Input(description="Text to echo", max_length=1000),
        repeat: int = Input(description="How many times", default=1, ge=1, le=10),
        case: str = Input(description="Letter case", default="as-is", choices=["as-is", "upper", "lower"]),
        reverse: bool = Input(description="Reverse the text", default=False),
        separator: str = " ",
    ) -> str:
        if case == "upper":
            text = text.upper()
        elif case == "lower":
            text = text.lower()
        if reverse:
            text = text[::-1]
        return self.prefix + separator.join([text] * repeat)

"""The prompt text the demo model sees: VLMEvalKit's MCQ prompt inside the wrapper's template.
Training builds its prompts with the same two functions the wrapper answers with."""

from __future__ import annotations

from .scenes import OPTION_LETTERS


def mcq_prompt(question: str, options: tuple[str, ...]) -> str:
    """VLMEvalKit's ImageMCQDataset.build_prompt text for a row without a hint."""
    prompt = f"Question: {question}\nOptions:\n"
    prompt += "".join(f"{letter}. {item}\n" for letter, item in zip(OPTION_LETTERS, options, strict=False))
    return prompt + "Please select the correct answer from the options above. \n"


def wrapper_text(prompt: str, has_image: bool) -> str:
    """The text the wrapper tokenises around VLMEvalKit's prompt (training uses it too)."""
    return ("USER: <image>\n" if has_image else "USER:\n") + prompt + "\nASSISTANT:"

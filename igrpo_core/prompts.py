"""Prompt construction: system prompts, the draft-attaching template, and draft truncation.

Everything that turns a question (and, for iGRPO stage 2, a draft) into token ids lives here, so the
trainer, the evaluator and the tiny model's warm-start script build byte-identical prompts.

A tokenizer with a chat template renders through it; one without (a base model) gets plain text,
"system prompt, blank line, question", tokenized as the tokenizer does by default (as TRL allows
non-conversational prompts). `prompt_format` says which; the trainer records it in the run.

Deliberately left out: any model-specific formatting beyond the tokenizer's own chat template.
"""
from __future__ import annotations

from dataclasses import dataclass

# Appendix C of arXiv 2602.09000, verbatim.
PAPER_SYSTEM_PROMPT = (
    "You are a helpful AI Assistant that provides well-reasoned and detailed responses. First think "
    "through your reasoning as an internal monologue, then give the answer: "
    "<think>...</think><answer>...</answer>. If the prompt contains feedback or a prior draft, treat it "
    "as guidance, not as ground truth. Use it to produce a strictly improved final answer: fix mistakes, "
    "fill gaps, strengthen justification, and improve clarity. Do not repeat the draft verbatim. If the "
    "feedback is wrong or incomplete, correct it and proceed."
)

# The paper does not publish how the draft is attached; this is ours, recorded in every run's config.
PAPER_DRAFT_TEMPLATE = (
    "{question}\n\nA prior draft solution follows. It may contain mistakes.\n"
    "<draft>\n{draft}\n</draft>\n\nWrite a strictly improved, complete solution."
)

# Compact variant for the built-in tiny model (character tokenizer: every character is a token).
TINY_DRAFT_TEMPLATE = "{question}\nDraft: {draft}\nImprove:"

TRUNCATION_MARK = " [...] "


def prompt_format(tokenizer) -> str:
    """"chat" when the tokenizer has a chat template, else "plain"."""
    return "chat" if getattr(tokenizer, "chat_template", None) else "plain"


def render_prompt(tokenizer, user_text: str, system_prompt: str | None) -> list[int]:
    """Token ids of a chat prompt ending with the assistant generation prefix (plain text without a template)."""
    if prompt_format(tokenizer) == "plain":
        text = f"{system_prompt}\n\n{user_text}" if system_prompt else user_text
        return list(tokenizer(text)["input_ids"])
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": user_text})
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def attach_draft(question: str, draft: str, template: str) -> str:
    """The stage-2 user message q' = template(question, draft)."""
    return template.format(question=question, draft=draft)


def _answer_span_start(draft: str) -> int:
    """Index where the draft's final answer begins (where the answer extractor's match starts:
    \\boxed{}, <answer>, "The answer is ...", "#### ..."), or len(draft) when it has none."""
    from igrpo_core.answers import answer_start  # lazy: config imports this module, math-verify is heavy
    start = answer_start(draft)
    return len(draft) if start is None else start


def _render_draft(tokenizer, question, draft, template, system_prompt) -> tuple[str, list[int]]:
    return draft, render_prompt(tokenizer, attach_draft(question, draft, template), system_prompt)


def _longest_fit(render, budget: int, *, limit: int) -> tuple[str, list[int]] | None:
    """Binary search for the largest n in [0, limit] whose render(n) = (text, ids) fits `budget`
    tokens (token count grows with n); that (text, ids), or None when not even n = 0 fits."""
    lo, hi, best = 0, limit, None
    while lo <= hi:
        mid = (lo + hi) // 2
        cand = render(mid)
        if len(cand[1]) <= budget:
            best, lo = cand, mid + 1
        else:
            hi = mid - 1
    return best


@dataclass
class RefinePrompt:
    ids: list[int]          # prompt token ids
    text: str               # the user message actually used (after truncation)
    draft_truncated: bool   # whether the draft had to be shortened to fit
    draft_chars_dropped: int


def build_refine_prompt(tokenizer, question: str, draft: str, *, template: str,
                        system_prompt: str | None, max_prompt_length: int) -> RefinePrompt:
    """Build q + draft within max_prompt_length tokens without ever cutting the question.

    The draft is shortened from the middle: its head and its final answer (from where the answer
    extractor's match starts) are kept, since the answer is what stage 2 most needs to see. Raises
    ValueError if even an empty draft does not fit, i.e. the question alone exceeds the budget.
    """
    ids = render_prompt(tokenizer, attach_draft(question, draft, template), system_prompt)
    if len(ids) <= max_prompt_length:
        return RefinePrompt(ids, attach_draft(question, draft, template), False, 0)
    bare = render_prompt(tokenizer, attach_draft(question, TRUNCATION_MARK.strip(), template), system_prompt)
    if len(bare) > max_prompt_length:
        raise ValueError(
            f"question needs {len(bare)} prompt tokens with the draft template, more than "
            f"max_prompt_length={max_prompt_length}; raise max_prompt_length or shorten the template")
    tail = draft[_answer_span_start(draft):]
    head_src = draft[: len(draft) - len(tail)]

    def longest(make, limit):  # the largest n <= limit whose draft make(n) fits, as (text, ids), or None
        return _longest_fit(lambda n: _render_draft(tokenizer, question, make(n), template, system_prompt),
                            max_prompt_length, limit=limit)

    # the head's first n characters, the mark and the whole answer tail; if even the answer tail
    # alone is too long, the mark and the tail's last n characters
    best = (longest(lambda n: head_src[:n] + TRUNCATION_MARK + tail, len(head_src))
            or longest(lambda n: TRUNCATION_MARK.lstrip() + tail[len(tail) - n:], len(tail)))
    if best is None:
        best = (TRUNCATION_MARK.strip(), bare)
    text, ids = attach_draft(question, best[0], template), best[1]
    return RefinePrompt(ids, text, True, len(draft) - len(best[0]) + len(TRUNCATION_MARK))

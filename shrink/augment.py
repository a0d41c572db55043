"""The transfer set: training texts perturbed so the teacher can say what it thinks of inputs it never saw.

Distillation teaches the student to answer like the teacher, but only on the
texts it is shown. On the training split the teacher is nearly certain (it was
trained on those very texts), so its soft targets there carry little of what it
knows about unfamiliar inputs; in intent detection that is exactly the
out-of-scope class, and a student distilled on the training split alone
predicts ``oos`` less often than its teacher does. Hinton et al. distil on a
*transfer set*; Tang et al. (2019, "Distilling task-specific knowledge from BERT
into simple neural networks") and TinyBERT build one from the task's own data by
masking words, swapping words and cutting n-grams, and let the teacher label
it. This module makes that set, deterministically for a seed; the teacher_logits
step labels it once, and the student trains on it with the soft term only (the
perturbed texts have no trustworthy hard label).
"""

from __future__ import annotations

import random

from shrink.config import AugmentConfig

__all__ = ["augment_texts"]


def augment_texts(texts: list[str], cfg: AugmentConfig, mask_token: str) -> list[str]:
    """``cfg.copies`` perturbed versions of every text, in order (copy 0 of every text first).

    Each word is masked with probability ``mask_prob`` or replaced by a word drawn
    from the whole corpus with probability ``replace_prob``; then, with
    probability ``ngram_prob``, only a random n-gram of 1..``max_ngram`` words is
    kept. Empty results fall back to the mask token, so every row is a real input.
    """
    rng = random.Random(cfg.seed)
    split = [t.split() for t in texts]
    vocabulary = sorted({w for words in split for w in words})
    out = []
    for _ in range(cfg.copies):
        for words in split:
            new = []
            for w in words:
                r = rng.random()
                if r < cfg.mask_prob:
                    new.append(mask_token)
                elif r < cfg.mask_prob + cfg.replace_prob and vocabulary:
                    new.append(rng.choice(vocabulary))
                else:
                    new.append(w)
            if len(new) > 1 and rng.random() < cfg.ngram_prob:
                n = rng.randint(1, min(cfg.max_ngram, len(new) - 1))
                start = rng.randint(0, len(new) - n)
                new = new[start : start + n]
            out.append(" ".join(new) or mask_token)
    return out

"""A CLIP tokenizer cut down to what an identity model needs: the byte tokens and Arc2Face's prompt.

A model trained from scratch on ``photo of a id person`` does not need CLIP's 49,408-row embedding
table (at 192 wide that alone would be 9.5 M parameters, more than the whole mini model). The
reduced tokenizer keeps CLIP's 512 byte-level tokens (every text still tokenises, character by
character), the merges CLIP's own BPE applies to the words kept, in CLIP's order, and the two
special tokens. On the kept words it therefore produces exactly the tokens CLIP produces, only
with smaller ids; the ``id`` token stays one token, as Arc2Face needs.
"""

from __future__ import annotations

import json

from transformers import CLIPTokenizer

#: CLIP's vocabulary starts with the 256 byte characters, then the same 256 with ``</w>``.
BYTE_TOKENS = 512


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> tuple[list[tuple[str, str]], list[str]]:
    """CLIP's BPE on one lower-case word: the merges applied, in order, and the final pieces."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    used = []
    while len(pieces) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(pieces, pieces[1:]))]
        rank, _ = min(pairs)
        if rank == len(ranks):
            break
        pair = next(p for p in zip(pieces, pieces[1:]) if ranks.get(p) == rank)
        used.append(pair)
        merged, i = [], 0
        while i < len(pieces):
            if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
                merged.append(pieces[i] + pieces[i + 1])
                i += 2
            else:
                merged.append(pieces[i])
                i += 1
        pieces = merged
    return used, pieces


def reduced_clip_tokenizer(tokenizer: CLIPTokenizer, words: list[str]) -> CLIPTokenizer:
    """``tokenizer`` (a full CLIP tokenizer) restricted to its byte tokens and ``words``."""
    vocab = tokenizer.get_vocab()
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]]
    ranks = {pair: i for i, pair in enumerate(merges)}
    kept = set()
    for word in words:
        used, pieces = _bpe(word.lower(), ranks)
        if pieces != tokenizer.tokenize(word):
            raise ValueError(f"cannot reproduce CLIP's tokens for {word!r}: is {tokenizer.name_or_path} a CLIP tokenizer?")
        kept.update(used)
    kept_merges = sorted(kept, key=ranks.__getitem__)
    small = {token: i for token, i in vocab.items() if i < BYTE_TOKENS}
    for a, b in kept_merges:
        small.setdefault(a + b, len(small))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        small[special] = len(small)
    return CLIPTokenizer(vocab=small, merges=kept_merges, model_max_length=tokenizer.model_max_length)

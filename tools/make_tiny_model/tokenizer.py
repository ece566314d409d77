"""The checkpoint's tokenizer and chat template.

The tokenizer is a small byte-level BPE trained with ``tokenizers`` on a fixed
built-in corpus, then padded with unreachable ``<|reserved_N|>`` entries up to
the config's ``vocab_size`` (so every id the random model can emit decodes --
mlx-vlm's BPEStreamingDetokenizer indexes a list of len(tokenizer.vocab) and
would raise IndexError on ids past the tokenizer).
"""
from __future__ import annotations

import json

# Special tokens, in id order (ids 0..len-1 of the trained tokenizer).
UNK_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
PAD_TOKEN = "<|im_end|>"
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
IMAGE_TOKEN = "<image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
EOU_TOKEN = "<end_of_utterance>"
VIDEO_TOKEN = "<video>"
ROW_COL_TOKENS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
SPECIAL_TOKENS = [
    UNK_TOKEN,
    BOS_TOKEN,
    PAD_TOKEN,
    FAKE_IMAGE_TOKEN,
    IMAGE_TOKEN,
    GLOBAL_IMAGE_TOKEN,
    EOU_TOKEN,
    VIDEO_TOKEN,
    *ROW_COL_TOKENS,
]

# SmolVLM2's template ("<|im_start|>User:<image>...text<end_of_utterance>\nAssistant:"),
# extended to accept plain-string content and empty content lists.
CHAT_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}"
    "{{ ': ' + message['content'] }}"
    "{% else %}"
    "{% if message['content'] and message['content'][0]['type'] == 'image' %}"
    "{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}"
    "{% elif line['type'] == 'video' %}{{ '<video>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _corpus() -> list[str]:
    """Fixed English corpus for the tokenizer (deterministic, no I/O)."""
    base = [
        "Describe the video.",
        "Describe this video segment in one sentence.",
        "Describe what happens in the video segment.",
        "You are a helpful assistant that watches video and answers briefly.",
        "Rate the significance of this segment from 0 to 10.",
        "Answer with the format Significance: N/10 and nothing else.",
        "The video shows a person doing a squat exercise in a gym.",
        "A person does a push-up on the floor, then takes a rest.",
        "The athlete performs squats, push-ups, lunges and a plank.",
        "Exercise: squat. Reps: 12. Sets: 3. Rest: 60 seconds.",
        "Exercise: push-up. Reps: 10. Sets: 2. Rest: 30 seconds.",
        "The person is resting between sets and drinking water.",
        "Nothing important happens in this segment; the scene is static.",
        "A white square appears in the frame. The frame is dark.",
        "A red square and a blue square move across the frame.",
        "The camera shows a kitchen, a street, a park and a room.",
        "Highlights: the most significant moment is the jump at the end.",
        "The score is high because the action is clear and important.",
        "The score is low because nothing happens in the video.",
        "Summary: the video has several segments with different activity.",
        "Frame, frames, segment, segments, clip, scene, timestamp, second, minute.",
        "Count the number of repetitions of the exercise in the video.",
        "The person stands up, bends the knees, and lowers the body.",
        "Keep the back straight and the core tight during the squat.",
        "Yes. No. Maybe. Unknown. None. Other. Red. Blue. Green. White. Black.",
        "Question: what is the person doing? Answer: exercising.",
        "Question: is there a square? Answer: yes, a white square.",
    ]
    lines = list(base)
    for n in range(11):
        lines.append(f"Significance: {n}/10")
        lines.append(f"Score: {n}/10")
        lines.append(f"Significance: {n}/10. Score: {n}/10.")
    for n in range(0, 100):
        lines.append(f"{n} {n * 7 % 100} {n}/10 {n}:{n * 3 % 60:02d} {n}.{n % 10}")
    return lines * 4


def build_tokenizer(train_vocab: int, vocab_size: int, extra_corpus: tuple = ()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=min(train_vocab, vocab_size),
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus() + list(extra_corpus), trainer)

    # Pad the BPE vocab up to vocab_size with unreachable entries so every id
    # the model can produce decodes to something.
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    used = set(vocab.values()) | {t["id"] for t in data["added_tokens"]}
    next_id = max(used) + 1
    i = 0
    while next_id < vocab_size:
        name = f"<|reserved_{i}|>"
        i += 1
        if name in vocab:
            continue
        vocab[name] = next_id
        next_id += 1
    if next_id > vocab_size:
        raise ValueError(f"tokenizer has {next_id} entries > vocab_size {vocab_size}")
    tok = Tokenizer.from_str(json.dumps(data))
    assert tok.get_vocab_size(with_added_tokens=True) == vocab_size
    return tok

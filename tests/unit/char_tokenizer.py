"""A tokenizer for model-free unit tests: one id per character (ids >= 32); no chat template, so
prompts are format.py's plain Q/A layout."""


class CharTokenizer:
    chat_template = None
    eos_token_id = 1
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


TOK = CharTokenizer()

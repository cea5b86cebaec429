"""The language-model floor under every stage: loading, text format, prompt encoder, generation.

    model.py           load the embedded default, HF directories/hub ids, GGUF files (converted once
                       to a cached safetensors copy) and student directories (student.json)
    format.py          chat rendering and the student's example format (prompt | rationale |
                       marker | answer), shared by annotation, training, evaluation and serving
    prompt_encoder.py  P-Tuning's virtual-token encoder, trained by student/ and used at prefill
    generate.py        one- and two-stage generation: one sampler, one end-of-sequence rule, the
                       stage stop rules every backend applies

Nothing here imports a stage (teacher/, student/, evaluate, tune, serve); they all import this.
"""

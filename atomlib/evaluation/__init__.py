"""Evaluation: measured numbers in place of claims (notebook 04, `atom eval`, `atom bench`).

    metrics   pure text metrics (bits per character, known words, distinct-n, themes, copying)
    evaluate  a trained run measured against baselines: eval.json and eval_samples.jsonl
    bench     ATOM-GPT against Hugging Face GPT-2, same shape and weights, ratios in one run
"""

"""Evaluation: measured numbers in place of claims (notebook 04, `atom eval`, `atom bench`).

    evaluate      `atom eval`: a trained run measured against baselines, step by step (the modules below)
    loss          val loss over block_size windows, perplexity, bits per character; a run's dataset
    samples       the prompt set, the model's answers to it, completion lines, the baselines' samples
    scoring       each sample's metrics and their group values (overall, per prompt kind)
    metrics       pure text metrics: known words, repetition, distinct-n, rhyme, themes
    char_ngrams   character n-grams: unigram/bigram baseline models, bits per char, TF-IDF relevance
    copying       the longest verbatim span shared with the training text (a suffix array)
    report        eval.json and eval_samples.jsonl written and read back: the quality tables
    plots         loss curves against step and wall-clock time
    decoding      notebook 05's measurements: samples, a temperature sweep, answers per kind, cache speed
    bench         ATOM-GPT against Hugging Face GPT-2, same shape and weights, ratios in one run
    bench_models  the bench's two models: one shape, one set of weights, checked to agree
    bench_rows    what the bench times: training steps, generation, the generation's kernels alone
    bench_timing  contestants warmed up, then timed in alternating rounds; medians, matmul peaks
    bench_report  the ratios against their targets, and the table
    bench_serve   `atom bench --serve`: concurrent streams against one over HTTP, tokens/s and TTFT
"""

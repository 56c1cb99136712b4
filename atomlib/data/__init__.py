"""Data: from public-domain books and scraped lyrics to token arrays (notebooks 01 and 02).

    sources    the pinned public-domain corpus: manifest, download or offline mirror, checksums
    scrape     the polite, resumable DarkLyrics scraper (each user collects lyrics themselves)
    clean      raw texts -> one JSONL corpus of documents, every cleaning rule counted
    tokenizer  characters, GPT-2's BPE (tiktoken) or a BPE trained on the corpus, one interface
    prepare    corpus -> train.bin / val.bin / meta.json, split by document
    setup      make the default dataset exist (fetch -> clean -> prepare, each skipped when done)
"""

"""Data: from public-domain books and scraped lyrics to token arrays (notebooks 01 and 02).

    sources      the pinned public-domain corpus: manifest, download or offline mirror, checksums
    scrape       the resumable DarkLyrics crawl: letters -> artists -> albums -> songs.jsonl
    fetcher      the crawl's polite, hardened HTTP: robots.txt, delay, retries, deadline, size cap,
                 same-site redirects, the page cache
    darklyrics   the site's pages (letter index, artist, album) parsed into plain data
    clean        raw texts -> one JSONL corpus of documents: the rule table and the pipeline
    text_rules   cleaning rules for any printed text: HTML, Unicode, Gutenberg apparatus, URLs, numbers
    lyric_rules  cleaning rules for a lyric site's noise: markers, placeholders, credits, metadata
    documents    the cleaner's inputs read as documents (.txt works, JSONL records) with metadata
    dedup        exact and near-duplicate documents (MinHash + LSH, confirmed by Jaccard)
    tokenizer    characters, GPT-2's BPE (tiktoken) or a BPE trained on the corpus, one interface
    prepare      corpus -> train.bin / val.bin / meta.json, split by document
    setup        make the default dataset exist (fetch -> clean -> prepare, each skipped when done)
    views        tables, plots and printouts of the data stage for notebooks 01 and 02
"""

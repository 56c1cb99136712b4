"""`atom <command>`: thin argument parsing over atomlib's functions.

Each command is one parser and one small handler over the library; no logic lives here. User
mistakes surface as AtomError and end as one line on stderr, exit code 2.

Imports: the data stage is imported at the top. The stages that need torch (train, sample,
eval, chat, bench, race) are imported inside their handlers, marked `# lazy:`, because importing
torch and transformers costs seconds while `atom --help`, a usage error or `atom fetch` need
neither; tests/test_packaging.py checks that importing this module loads no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from atomlib.data.clean import clean, report_path
from atomlib.data.prepare import prepare
from atomlib.data.scrape import format_summary, scrape_darklyrics
from atomlib.data.sources import fetch
from atomlib.errors import AtomError


# --- data --------------------------------------------------------------------------------


def _add_fetch(sub):
    p = sub.add_parser("fetch", help="download (or copy from a mirror) the public-domain corpus, sha256-checked")
    p.add_argument("--mirror", type=Path, default=None, help="folder holding the UTF-8 files (default: $ATOM_MIRROR, else ../shared/corpus if present, else the network)")
    p.add_argument("--no-mirror", action="store_true", help="ignore any mirror and download the pinned URLs")
    p.add_argument("--out", type=Path, default=None, help="output folder (default data/raw/public_domain)")
    p.add_argument("--manifest", type=Path, default=None, help="manifest JSON (default data/sources.json)")
    p.set_defaults(func=_run_fetch)


def _run_fetch(args):
    if args.no_mirror and args.mirror is not None:
        raise AtomError("atom fetch takes --mirror DIR or --no-mirror, not both; drop one of them.")
    fetch(mirror=False if args.no_mirror else args.mirror, out_dir=args.out, manifest=args.manifest)


def _add_scrape(sub):
    p = sub.add_parser("scrape", help="collect lyrics politely from a site (darklyrics)")
    p.add_argument("site", choices=["darklyrics"])
    p.add_argument("--artist", action="append", default=[], metavar="SLUG", help="artist slug (repeatable)")
    p.add_argument("--letter", action="append", default=[], metavar="L", help="index letter a..z or 19 (repeatable)")
    p.add_argument("--base-url", default="http://www.darklyrics.com")
    p.add_argument("--out", type=Path, default=None, help="output folder for songs.jsonl (default data/raw/darklyrics)")
    p.add_argument("--delay", type=float, default=3.0, help="seconds between requests (default 3)")
    p.add_argument("--cache", type=Path, default=None, help="page cache folder (default data/raw/darklyrics/cache)")
    p.set_defaults(func=_run_scrape)


def _run_scrape(args):
    if not args.artist and not args.letter:
        raise AtomError("atom scrape darklyrics needs at least one --artist SLUG or --letter L.")
    summary = scrape_darklyrics(artists=args.artist, letters=args.letter, base_url=args.base_url,
                                out_dir=args.out, delay=args.delay, cache_dir=args.cache)
    print(format_summary(summary))


def _add_clean(sub):
    p = sub.add_parser("clean", help="clean raw sources into one JSONL corpus, with a per-rule report")
    p.add_argument("inputs", nargs="+", type=Path, help=".txt files, folders (their .txt files, recursively), .jsonl with a lyrics or text field")
    p.add_argument("--out", type=Path, default=None, help="output JSONL (default data/interim/corpus.jsonl)")
    p.set_defaults(func=_run_clean)


def _run_clean(args):
    r = clean(args.inputs, out=args.out)
    print(f"clean: {r['documents_in']} documents in, {r['documents_out']} out ({r['dropped_empty']} empty, "
          f"{r['dropped_duplicates_exact']} exact + {r['dropped_duplicates_near']} near duplicates dropped), "
          f"{r['chars_in']:,} -> {r['chars_out']:,} chars in {r['seconds']}s")
    for name, n in r["rules"].items():
        print(f"  {name:<26} {n:>9,}")
    print(f"corpus: {r['output']}\nreport: {report_path(r['output'])}")


def _add_prepare(sub):
    p = sub.add_parser("prepare", help="tokenize a corpus into train.bin / val.bin / meta.json")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--tokenizer", choices=["char", "gpt2", "bpe"], default="char",
                   help="char: one token per character; gpt2: GPT-2's BPE; bpe: a byte-level BPE trained on the train split")
    p.add_argument("--vocab-size", type=int, default=None, help="size of the corpus BPE (--tokenizer bpe; default 1024)")
    p.add_argument("--name", required=True, help="dataset name (written to data/processed/NAME)")
    p.add_argument("--out", type=Path, default=None, help="output folder instead of data/processed/NAME")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1337)
    p.set_defaults(func=_run_prepare)


def _run_prepare(args):
    prepare(args.corpus, tokenizer=args.tokenizer, name=args.name, out_dir=args.out,
            val_fraction=args.val_fraction, seed=args.seed, vocab_size=args.vocab_size)


# --- model -------------------------------------------------------------------------------


def _add_train(sub):
    p = sub.add_parser("train", help="train a GPT from a config (single process or torchrun DDP)")
    p.add_argument("--config", default=None, help="config name under configs/ or a YAML path (default cpu; a resumed run keeps its own)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default outputs/runs/<config>-<date-time>)")
    p.add_argument("--resume", type=Path, default=None, help="continue the run in this folder from its last checkpoint")
    p.add_argument("--nproc", type=int, default=1, help="processes per node (DDP via torchrun when > 1)")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int, default=None, help="default: a free port on one node, 29500 across nodes")
    p.set_defaults(func=_run_train)


def _run_train(args):
    from atomlib.training.launch import launch  # lazy: see the module docstring

    launch(config=args.config, overrides=args.set, out_dir=args.out, resume=args.resume,
           nproc=args.nproc, nnodes=args.nnodes, node_rank=args.node_rank,
           master_addr=args.master_addr, master_port=args.master_port)


def _add_sample(sub):
    p = sub.add_parser("sample", help="generate text from a trained run or a GPT-2")
    p.add_argument("--run", type=Path, default=None, help="run folder (default: the newest under outputs/runs)")
    p.add_argument("--init-from", default=None, help="gpt2, gpt2-medium, ... or a local save_pretrained folder")
    p.add_argument("--prompt", default=None, help="prompt text, or FILE:path to read it from a file")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--min-new-tokens", type=int, default=0, help="no stop string ends a sample before this many tokens")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop string, e.g. $'\\n\\n' for the end of a verse (repeatable; the text ends before it)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="matrix products in this dtype (auto: bf16 where the CPU has it natively and the model has 16M+ parameters, else float32)")
    p.set_defaults(func=_run_sample)


def _run_sample(args):
    from atomlib.generation.engine import generate  # lazy: see the module docstring
    from atomlib.generation.loading import load_for_sampling, read_prompt  # lazy: see the module docstring
    from atomlib.generation.sampling import SamplingParams  # lazy: see the module docstring

    model, tokenizer, source = load_for_sampling(args.run, args.init_from, args.device)
    prompt = read_prompt(args.prompt)
    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens,
                            min_new_tokens=args.min_new_tokens, stop=tuple(args.stop), seed=args.seed,
                            num_samples=args.num_samples, precision=args.precision).checked()
    print(f"sampling from {source}", file=sys.stderr)
    if params.num_samples == 1:  # one sample streams as it is drawn
        _write(prompt)
        generate(model, tokenizer, prompt, params, on_token=lambda _i, piece: _write(piece))
        _write("\n")
    else:
        for g in generate(model, tokenizer, prompt, params):
            _write(prompt + g.text + "\n---------------\n")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _add_eval(sub):
    p = sub.add_parser("eval", help="measure a run: loss, bpc and generation quality against baselines")
    p.add_argument("--run", type=Path, default=None, help="run folder (default: the newest under outputs/runs)")
    p.add_argument("--prompts", type=Path, default=None, help="prompt set (JSONL with prompt and kind); default: the shipped set")
    p.add_argument("--num-samples", type=int, default=2, help="samples per prompt")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--val-batches", type=int, default=None, help="limit the val loss to this many batches (default: the full split)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap every sample's length (default: each prompt kind's preset)")
    p.add_argument("--prompts-per-kind", type=int, default=None, help="a quick look: only the first N prompts of each kind")
    p.add_argument("--relevance", choices=["auto", "minilm", "tfidf"], default="auto",
                   help="prompt-relevance embedding: MiniLM when installed (auto), or char n-gram TF-IDF")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_run_eval)


def _run_eval(args):
    from atomlib.evaluation.evaluate import evaluate_run  # lazy: see the module docstring
    from atomlib.evaluation.report import render_quality_table  # lazy: see the module docstring

    result = evaluate_run(run=args.run, prompts=args.prompts, num_samples=args.num_samples, seed=args.seed,
                          val_batches=args.val_batches, device=args.device, relevance=args.relevance,
                          max_new_tokens=args.max_new_tokens, prompts_per_kind=args.prompts_per_kind)
    print(render_quality_table(result))
    run = Path(result["settings"]["run"])
    print(f"\nwrote {run / 'eval.json'} and {run / 'eval_samples.jsonl'} ({result['settings']['seconds']['total']:.0f}s)")


def _add_chat(sub):
    p = sub.add_parser("chat", help="chat with a trained run in the terminal (one prompt per line when piped)")
    p.add_argument("--run", type=Path, default=None, help="run folder (default: the newest under outputs/runs)")
    p.add_argument("--mode", choices=["chat", "completion"], default="chat")
    p.add_argument("--enhance", action="store_true", help="rewrite answers through an OpenAI-compatible server (LM Studio)")
    p.add_argument("--lmstudio-url", default=None, help="base URL (default $ATOM_LMSTUDIO_URL, else http://localhost:1234/v1, then :8080/v1)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_run_chat)


def _run_chat(args):
    from atomlib.apps.session import ChatSession  # lazy: see the module docstring
    from atomlib.apps.terminal import Terminal  # lazy: see the module docstring

    session = ChatSession.from_run(args.run, device=args.device, mode=args.mode, enhance=args.enhance,
                                   lmstudio_url=args.lmstudio_url)
    if args.enhance:
        session.enhancer.check()
    code = Terminal(session).run()
    if code:
        raise SystemExit(code)


def _add_bench(sub):
    p = sub.add_parser("bench", help="benchmark training and generation against Hugging Face GPT-2 in the same run")
    p.add_argument("--config", default="test", help="config whose model shape to benchmark")
    p.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds per comparison")
    p.add_argument("--tiny", action="store_true", help="a tiny shape for a quick correctness check")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--compile", action="store_true", help="also time ATOM under torch.compile (adds its compile time)")
    p.add_argument("--profile", action="store_true",
                   help="instead of timing, print torch.profiler's top ops for a training step and for generation")
    p.add_argument("--serve", action="store_true",
                   help="instead, time `atom serve` over HTTP: --streams concurrent streams against one (tokens/s, TTFT)")
    p.add_argument("--run", type=Path, default=None, help="with --serve: the run to serve (default: the newest)")
    p.add_argument("--streams", type=int, default=8, help="with --serve: concurrent streams (default 8)")
    p.add_argument("--stream-interval", type=float, default=None,
                   help="with --serve: the server's --stream-interval (default: its own)")
    p.set_defaults(func=_run_bench)


def _run_bench(args):
    from atomlib.evaluation.bench import profile_tables, run_bench  # lazy: see the module docstring

    if args.rounds is not None and args.rounds < 1:
        raise AtomError(f"--rounds {args.rounds} must be at least 1.")
    if args.serve:
        _run_serve_bench(args)
    elif args.profile:
        print(profile_tables(config=args.config, tiny=args.tiny, device=args.device))
    else:
        run_bench(config=args.config, tiny=args.tiny, rounds=args.rounds, device=args.device,
                  compile_row=args.compile, json_path=args.json)


def _run_serve_bench(args):
    from atomlib.evaluation.bench_serve import format_serve, serve_bench  # lazy: see the module docstring

    result = serve_bench(run=args.run, streams=args.streams, rounds=args.rounds or 5, device=args.device,
                         stream_interval=args.stream_interval)
    print(format_serve(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def _add_race(sub):
    p = sub.add_parser("race", help="time to quality: train configs on one split, val loss against wall clock (nanoGPT too)")
    p.add_argument("contestants", nargs="*", metavar="CONFIG[:key=value,...]",
                   help="configs to train, each with optional overrides, e.g. cpu cpu:optimizer=adamw")
    p.add_argument("--dataset", default=None, help="the dataset every contestant trains on (default: each config's own)")
    p.add_argument("--nanogpt", type=Path, default=None,
                   help="a karpathy/nanoGPT folder: also run its CPU recipe on the same split (measurement only)")
    p.add_argument("--max-iters", type=int, default=None, help="every contestant's training steps (default: each config's)")
    p.add_argument("--nanogpt-set", action="append", default=[], metavar="KEY=VALUE",
                   help="change one setting of nanoGPT's recipe (e.g. max_iters=500; repeatable)")
    p.add_argument("--target-bpc", type=float, default=None,
                   help="report the wall time to this val bits per character (default: nanoGPT's final, if it runs)")
    p.add_argument("--out", type=Path, default=None, help="folder for the runs, race.json and race.png (default outputs/races/<date-time>)")
    p.add_argument("--no-samples", action="store_true", help="skip the known-word rate of each run's samples")
    p.set_defaults(func=_run_race)


def _run_race(args):
    from atomlib.training.race import race  # lazy: see the module docstring

    race(args.contestants, dataset=args.dataset, nanogpt=args.nanogpt, out_dir=args.out, target_bpc=args.target_bpc,
         samples=not args.no_samples, nanogpt_set=args.nanogpt_set, max_iters=args.max_iters)


# --- entry point ---------------------------------------------------------------------------


def _add_serve(sub):
    p = sub.add_parser("serve", help="serve a run over an OpenAI-compatible HTTP API (batched, streamed)")
    p.add_argument("--run", type=Path, default=None, help="run folder (default: the newest under outputs/runs/)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $ATOM_API_KEY, else none)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a key: anyone who can reach the port may use the model")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-tokens", type=int, default=1024, help="cap on a request's max_tokens")
    p.add_argument("--max-rows", type=int, default=16, help="samples decoded together")
    p.add_argument("--max-waiting", type=int, default=64, help="requests waiting beyond those (429 above)")
    p.add_argument("--stream-interval", type=float, default=0.02,
                   help="seconds between a stream's events; pieces drawn meanwhile share one (0: an event a token)")
    p.set_defaults(func=_run_serve)


def _run_serve(args):
    try:
        from atomlib.apps.serve import Limits, check_exposure, open_run, serve  # lazy: see the module docstring
    except ModuleNotFoundError as e:  # the serve extra is optional: say how to get it, in one line
        raise AtomError(f"atom serve needs the serve extra ({e.name} is missing): pip install -e '.[serve]'.") from None

    key = args.api_key or os.environ.get("ATOM_API_KEY") or None
    check_exposure(args.host, key, args.insecure)  # before the model loads
    if args.stream_interval < 0:
        raise AtomError(f"--stream-interval {args.stream_interval} must be 0 or more seconds.")
    limits = Limits(max_tokens=args.max_tokens, max_rows=args.max_rows, max_waiting=args.max_waiting,
                    stream_interval=args.stream_interval)
    serve(open_run(args.run, args.device, limits, key), args.host, args.port, args.insecure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atom", description="ATOM-GPT: small GPTs for metal lyrics and dark verse.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_fetch, _add_scrape, _add_clean, _add_prepare, _add_train,
                _add_sample, _add_eval, _add_chat, _add_bench, _add_race, _add_serve):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AtomError as e:
        print(f"atom {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"atom {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

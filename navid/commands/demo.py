"""``navid demo``: the README's "run the main job" command (see :mod:`navid.demo`)."""

from __future__ import annotations

import argparse

from navid.cli import non_negative_int, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="the whole job on the embedded dataset: data, tokenizer, NAR, samples, FVD, throughput",
        description="Synthesise the embedded dataset, train the tiny tokenizer and a tiny NAR generator, sample every "
        "class, compute FVD/KVD and the per-class verdict against real clips and a random-token baseline, and time NAR "
        "vs PAR-4x vs raster. Training runs fixed step counts, so every machine does the same training (the numbers "
        "agree closely across machines, bit for bit on one machine). Default ≈ 12.5-13.5 min on a 2-core CPU; "
        "--quick ≈ 1-3 min.",
    )
    demo.add_argument("--out", default="demo_out", help="output folder (new or empty unless --overwrite)")
    demo.add_argument("--quick", action="store_true", help="a smoke-test-sized run (≈ 1-3 minutes)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance scale for the samples")
    demo.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0 = greedy)")
    demo.add_argument("--top-k", type=non_negative_int, default=20,
                      help="sample among the k most likely tokens (0 = off)")
    demo.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    demo.add_argument("--tokenizer-steps", type=positive_int, default=None,
                      help="tokenizer steps (default: the plan's)")
    demo.add_argument("--generator-steps", type=positive_int, default=None,
                      help="generator steps (default: the plan's)")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from navid.demo import run_demo

    run_demo(
        args.out, quick=args.quick, seed=args.seed, cfg_scale=args.cfg, temperature=args.temperature, top_k=args.top_k,
        overwrite=args.overwrite, tokenizer_steps=args.tokenizer_steps, generator_steps=args.generator_steps,
    )
    return 0

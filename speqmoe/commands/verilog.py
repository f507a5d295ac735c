"""speqmoe verilog: write the Verilog of the generated designs."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("verilog", help="generate Verilog (build/verilog/*.v)", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("build/verilog"), help="output folder")
    p.add_argument("--config", type=Path, default=None, help="configuration TOML")
    p.add_argument("--designs", default=None,
                   help="comma-separated design names (default: all but pe_array, which is "
                        "pe_array_4x4 unless [array] says otherwise); see --list")
    p.add_argument("--list", action="store_true", help="list the designs and exit")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from speqmoe import designs
    from speqmoe.config import load_config

    cfg = load_config(args.config)
    if args.list:
        width = max(len(n) for n in designs.DESIGNS)
        print("\n".join(f"{n:<{width}}  {designs.describe(n, cfg)}" for n in designs.DESIGNS))
        return 0
    chosen = designs.select(args.designs, designs.DEFAULT_VERILOG)
    for name in chosen:
        path = designs.write(name, cfg, args.out)
        print(f"wrote {path} (+ {name}.json, {name}.md: ports and payload fields; "
              f"{name}.core: FuseSoC core)")
    if any(name.startswith("accel") for name in chosen):
        from hw.accel import register_doc
        path = args.out / "accel_registers.md"
        path.write_text(register_doc())
        print(f"wrote {path}")
    return 0

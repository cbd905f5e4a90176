"""``slukd train slu|captioning ROW [--key value ...]``: run one row of a recipe.

``ROW`` is a row name (a file of the recipe's hparams folder, e.g. ``seq_kd``) or a YAML file; everything after it
goes to the recipe as it would on ``python recipes/<recipe>.py ROW.yaml ...`` (hparams overrides and SpeechBrain
run options). ``--hparams_dir DIR`` takes the row files from DIR. ``slukd train slu seq_kd --help`` lists the row's
hparams with their comments.
"""

from __future__ import annotations

import argparse
import runpy
import sys

from slukd.resources import RECIPES, list_rows, recipe_path, resolve_row


def cli_main(argv: list[str], prog: str = "slukd train") -> int:
    """``slukd train RECIPE ROW [options]`` (see the module docstring)."""
    usage = f"{prog} {{{','.join(RECIPES)}}} ROW [--hparams_dir DIR] [recipe options]"
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0], add_help=False, usage=usage,
        epilog="example: slukd train slu seq_kd --seed 1 --number_of_epochs 5  (slukd train slu seq_kd --help: the "
        "row's settings, defaults and comments)",
    )  # fmt: skip
    p.add_argument("recipe", nargs="?", choices=list(RECIPES), help="which recipe")
    p.add_argument("row", nargs="?", help="a row name (a file of the recipe's hparams folder) or a YAML file")
    p.add_argument("--hparams_dir", default=None, help="folder of row files (default: the shipped hparams/<recipe>)")
    args, rest = p.parse_known_args(argv)
    if args.recipe is None or (args.row is None and ("-h" in rest or "--help" in rest or not rest)):
        p.print_help()
        print("\n" + __doc__.split("\n\n", 1)[1].strip())
        if args.recipe is not None:
            print(f"\nrows of {args.recipe}: {', '.join(list_rows(args.recipe, args.hparams_dir))}")
        return 0 if ("-h" in rest or "--help" in rest) else 2
    row = resolve_row(args.recipe, args.row, args.hparams_dir)
    script = recipe_path(args.recipe)
    old = sys.argv
    sys.argv = [str(script), str(row), *rest]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        sys.argv = old
    return 0

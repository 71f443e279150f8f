"""Downloads and prepares a CIFAR data set for `--config.data.source=tfds`.

    python -m jaxlab.data.prepare --dataset=cifar100 [--tfds_dir=DIR]

Writes the TFDS data set in the `array_record` file format, which
`jaxlab.data.cifar.load_tfds` reads without TensorFlow. Preparing, unlike
reading, needs network access and TensorFlow: `pip install -e ".[prepare]"`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from jaxlab import checks

DATASETS = ('cifar10', 'cifar100')

_NEEDS_TENSORFLOW = (
    'Preparing a TFDS data set needs TensorFlow (and network access), which '
    'is not installed. Install it with: pip install -e ".[prepare]"\n'
    'Without it: use the original python archive with '
    '--config.data.source=archive --config.data.dir=PATH, or run the offline '
    'demo on the embedded digits data set with the :quick configs.'
)


def tensorflow_available() -> bool:
  """Whether `import tensorflow` would find a package (without importing it)."""
  return importlib.util.find_spec('tensorflow') is not None


def prepare(name: str, tfds_dir: str = '') -> str:
  """Downloads and prepares `name` as array_record; returns its folder."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder(
      name, data_dir=tfds_dir or None, file_format='array_record'
  )
  builder.download_and_prepare()
  return str(builder.data_dir)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = checks.ToolParser(
      prog='python -m jaxlab.data.prepare', description=__doc__.split('\n')[0]
  )
  parser.add_argument('--dataset', required=True, choices=DATASETS)
  parser.add_argument(
      '--tfds_dir', default='', help="TFDS data_dir ('' = TFDS's default)."
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the CLI; returns the exit status (2 when TensorFlow is missing, or bad input; 4 for
  the environment: checks.run_tool)."""
  args = _parse_args(argv)
  if not tensorflow_available():
    print(_NEEDS_TENSORFLOW, file=sys.stderr)
    return 2

  def work():
    folder = prepare(args.dataset, args.tfds_dir)
    tfds_flag = f' --config.data.tfds_dir={args.tfds_dir}' if args.tfds_dir else ''
    print(
        f'Prepared {args.dataset} in {folder}. Train with '
        f'--config.data.name={args.dataset} --config.data.source=tfds{tfds_flag}'
    )

  return checks.run_tool(work, args.tfds_dir or '.')


if __name__ == '__main__':
  sys.exit(main())

"""Run one jaxlab experiment: jaxlab --config=NAME[:variant] [--workdir=DIR].

NAME is a config that ships with jaxlab (distributed, hybrid, ladder, mhc; e.g.
--config=hybrid:quick) or a path to a config file (--config=configs/hybrid.py:quick).
`python -m jaxlab` and, in a checkout, `python launch.py` are the same command.

Any config field can be overridden: --config.optim.lr=3e-4. Unknown fields,
values of the wrong type and unknown choices are errors before anything runs.
The run writes to workdirs/NAME[-variant] in the current directory unless --workdir
says otherwise. Rerunning the same command with the same --workdir resumes from its
checkpoint (a finished run prints its summary again); a workdir started with another
config is refused. SIGTERM saves a checkpoint at the step reached and stops; rerun to
resume. Exit codes: 0 done, 2 bad input (one line: error: <what> (<field or path>): <fix>;
--verbosity=1 adds the traceback), 3 diverged (a non-finite loss or
parameter; nothing non-finite was saved), 143 preempted (SIGTERM; checkpoint saved).

Several processes (hosts) run one job when each runs the same command with
--config.distributed.initialize=true (see the README's "Several processes"):
process 0 writes the files, every process takes part in each checkpoint.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxlab import cli

BAD_INPUT = 2  # exit code of a bad value, file or directory (nothing computed or written)
DIVERGED = 3  # exit code of a run stopped by a non-finite loss or parameter
_HELP = ('--help', '--helpshort', '--helpfull', '--helpxml', '-?', '-h')

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config: a packaged config NAME[:variant] (distributed, hybrid, ladder, '
    'mhc; e.g. hybrid:quick) or a file path[:variant] (configs/hybrid.py:quick).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where the run writes; default workdirs/<config>[-<variant>].')


def default_workdir(spec):
  path, _, variant = spec.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('workdirs', f'{name}-{variant}' if variant else name)


def _env_device_count(argv):
  """Whether the environment already sets the CPU device count (XLA_FLAGS or
  JAX_NUM_CPU_DEVICES) and the command line does not ask for simulated_cpu_devices: a
  config's own default (e.g. quick's 4) then gives way, so that
  `XLA_FLAGS=--xla_force_host_platform_device_count=2 jaxlab ...` runs on 2."""
  if any(a.startswith('--config.simulated_cpu_devices') for a in argv):
    return False
  return ('xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', '')
          or bool(os.environ.get('JAX_NUM_CPU_DEVICES')))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = _CONFIG.value
  simulate = config.get('simulated_cpu_devices', 0)
  if simulate and 'jax' not in sys.modules and not _env_device_count(sys.argv):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_force_host_platform_device_count={simulate}')
  from jaxlab.parallel import processes  # after flag parsing: imports JAX
  try:
    processes.initialize(config.distributed)  # before anything touches a JAX backend
  except (ValueError, RuntimeError) as e:
    bad_input(e)
  if not processes.is_main():  # process 0 alone talks to the user (errors still show)
    sys.stdout.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # C++ libraries' prints too
  from jaxlab import experiments
  from jaxlab.train.guards import DivergenceError
  from jaxlab.train.preemption import Preempted, watch
  watch()
  # console() has rewritten every --config to a file path; absl reads the last one.
  spec = [a for a in sys.argv if a.startswith('--config=')][-1].split('=', 1)[1]
  try:
    experiments.run(config, _WORKDIR.value or default_workdir(spec), overridden(sys.argv))
  except DivergenceError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(DIVERGED)
  except Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(Preempted.EXIT_CODE)
  except (ValueError, FileNotFoundError) as e:  # checks.BadInput among them
    if flags.FLAGS.verbosity > 0:
      raise
    bad_input(e)


def bad_input(error):
  """Exit with BAD_INPUT after one line on stderr: `error: <what> (<field or path>): <fix>`."""
  print('error: ' + ' '.join(str(error).split()), file=sys.stderr)  # one line, always
  sys.exit(BAD_INPUT)


def overridden(argv):
  """The dotted config fields a command line sets (--config.optim.lr=... -> 'optim.lr')."""
  return {a[len('--config.'):].split('=', 1)[0] for a in argv if a.startswith('--config.')}


def console():
  """The `jaxlab` command (also `python -m jaxlab` and a checkout's `python launch.py`):
  resolve --config to a file, check the command line, then run `main` under absl."""
  main_module = sys.modules.get('__main__')
  if main_module is not None and not main_module.__doc__:
    main_module.__doc__ = __doc__  # absl's --help prints the main module's docstring
  try:
    sys.argv[:] = cli.resolve_argv(sys.argv)
    if not any(a in _HELP for a in sys.argv[1:]):
      cli.check_command_line(sys.argv)
  except (cli.CommandLineError, ValueError) as e:
    bad_input(e)
  app.run(main)

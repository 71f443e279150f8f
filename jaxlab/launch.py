"""Run one jaxlab experiment: jaxlab --config=NAME[:variant] [--workdir=DIR].

NAME is a config that ships with jaxlab (distributed, hybrid, ladder, mhc; e.g.
--config=hybrid:quick) or a path to a config file (--config=configs/hybrid.py:quick).
`python -m jaxlab` and, in a checkout, `python launch.py` are the same command.

Any config field can be overridden: --config.optim.lr=3e-4. Unknown fields,
values of the wrong type and unknown choices are errors before anything runs.
The run writes to workdirs/NAME[-variant] in the current directory unless --workdir
says otherwise. Rerunning the same command with the same --workdir resumes from its
checkpoint (a finished run prints its summary again); a workdir started with another
config is refused, and so is a second run while one is writing the workdir. Ctrl-C
(SIGINT) and SIGTERM save a checkpoint at the step reached and stop; rerun to resume.
Every failure is one line on stderr (error: <what> (<field or path>): <fix>; --verbosity=1
adds the traceback). Exit codes: 0 done, 2 bad input, 3 diverged (a non-finite loss or
parameter; nothing non-finite was saved), 4 environment (a full disk, an unavailable
JAX_PLATFORMS, a path too long, a damaged file or checkpoint), 5 the workdir is busy
(another run holds it), 130 interrupted (Ctrl-C) and 143 preempted (SIGTERM), each with a
checkpoint saved at the step reached.

Several processes (hosts) run one job when each runs the same command with
--config.distributed.initialize=true (see docs/devices.md, "Several processes"):
process 0 writes the files, every process takes part in each checkpoint.
"""

import logging as std_logging
import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from jaxlab import checks, cli, host
from jaxlab.train import preemption

BAD_INPUT = checks.BAD_INPUT  # 2: a bad value, file or directory (nothing computed or written)
DIVERGED = 3  # exit code of a run stopped by a non-finite loss or parameter
ENVIRONMENT = checks.ENVIRONMENT  # 4: the machine or the workdir's files
BUSY = 5  # another run holds the workdir
_CONFIG_FLAG = '--config'
_HELP = ('--help', '--helpshort', '--helpfull', '--helpxml', '-?', '-h')

_CONFIG_HELP = ('Config: a packaged config NAME[:variant] (distributed, hybrid, ladder, mhc; '
                'e.g. hybrid:quick) or a file path[:variant] (configs/hybrid.py:quick); '
                '--config.FIELD=value overrides a field.')
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
  config = flags.FLAGS.config
  simulate = config.get('simulated_cpu_devices', 0)
  if simulate and 'jax' not in sys.modules and not _env_device_count(sys.argv):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_force_host_platform_device_count={simulate}')
  # console() has rewritten every --config to a file path; absl reads the last one.
  spec = [a for a in sys.argv if a.startswith('--config=')][-1].split('=', 1)[1]
  workdir = _WORKDIR.value or default_workdir(spec)
  if flags.FLAGS.verbosity <= 0:
    _quiet_background_failures()
  try:
    _run(config, workdir)
  except BaseException as e:  # pylint: disable=broad-except  # each kind its one line and code
    outcome = failure(e, workdir)
    if outcome is None:
      raise
    if flags.FLAGS.verbosity > 0:
      traceback.print_exc()
    code, line = outcome
    print(line, file=sys.stderr)
    sys.exit(code)


def _quiet_background_failures():
  """Keep the one line the only thing a failure prints: orbax logs the failure of each of its
  background threads (a full disk, a damaged checkpoint) with a traceback before the error
  reaches the loop, and asyncio callbacks of the aborted writes report the event loop they
  can no longer reach. --verbosity=1 shows them all."""
  class OrbaxErrors(std_logging.Filter):

    def filter(self, record):
      return not (record.levelno >= std_logging.ERROR
                  and f'{os.sep}orbax{os.sep}' in (record.pathname or ''))

  logging.get_absl_logger().addFilter(OrbaxErrors())
  std_logging.getLogger('asyncio').setLevel(std_logging.CRITICAL)  # 'never retrieved' tasks
  previous = sys.unraisablehook

  def hook(unraisable):  # an aborted write's callback, after the save's event loop closed
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == 'Event loop is closed':
      return
    previous(unraisable)

  sys.unraisablehook = hook


def _run(config, workdir):
  with preemption.deferred():  # a signal inside an extension's import would crash it
    from jaxlab.parallel import processes  # after flag parsing: imports JAX
    from jaxlab import experiments  # pylint: disable=g-import-not-at-top
    if config.get('experiment') in experiments.EXPERIMENTS:  # else run() names the choices
      experiments.family_module(config)  # flax, optax, orbax (tensorstore), ...
  try:
    processes.initialize(config.distributed)  # before anything touches a JAX backend
  except (ValueError, RuntimeError) as e:
    raise ValueError(str(e)) from e  # bad input: the message names the fields
  processes.check_platform()
  if not processes.is_main():  # process 0 alone talks to the user (errors still show)
    sys.stdout.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # C++ libraries' prints too
  experiments.run(config, workdir, overridden(sys.argv))


def failure(error, workdir):
  """(exit code, the line on stderr) of a run that raised `error`, or None for an error that
  is a bug (its traceback is printed)."""
  from jaxlab.train.guards import DivergenceError  # pylint: disable=g-import-not-at-top
  if isinstance(error, preemption.Preempted):
    return error.exit_code, str(error)
  if isinstance(error, DivergenceError):
    return DIVERGED, checks.error_line(error)
  if isinstance(error, checks.WorkdirBusy):
    return BUSY, checks.error_line(error)
  return checks.tool_failure(error, workdir)  # bad input, the environment, or a bug (None)


def bad_input(error):
  """Exit with BAD_INPUT after one line on stderr: `error: <what> (<field or path>): <fix>`."""
  print(checks.error_line(error), file=sys.stderr)
  sys.exit(BAD_INPUT)


def overridden(argv):
  """The dotted config fields a command line sets (--config.optim.lr=... -> 'optim.lr')."""
  return {a[len('--config.'):].split('=', 1)[0] for a in argv if a.startswith('--config.')}


def _define_config(config, argv):
  """Hand absl the config that cli.check_command_line loaded (the config file runs once):
  the flag --config holds it and absl applies each --config.FIELD=value to it. Returns the
  command line absl parses: argv without --config=PATH, which it has no use for. Under
  --help, where nothing was loaded, --config is only listed."""
  for name in [n for n in flags.FLAGS if n == 'config' or n.startswith('config.')]:
    delattr(flags.FLAGS, name)  # a second console() in one process (tests)
  if config is None:
    flags.DEFINE_string('config', None, _CONFIG_HELP)
    return [a for a in argv if not a.startswith(_CONFIG_FLAG)]
  argv = [a for a in argv if not a.startswith(_CONFIG_FLAG + '=')]
  config_flags.DEFINE_config_dict('config', config, _CONFIG_HELP, lock_config=True, sys_argv=argv)
  return argv


def console():
  """The `jaxlab` command (also `python -m jaxlab` and a checkout's `python launch.py`):
  resolve --config to a file, check the command line, then run `main` under absl."""
  main_module = sys.modules.get('__main__')
  if main_module is not None:
    main_module.__doc__ = __doc__  # absl's --help prints the main module's docstring
  try:
    host.from_environment()  # JAXLAB_MALLOC, before JAX starts a thread (jaxlab/host.py)
    sys.argv[:] = cli.resolve_argv(sys.argv)
    config = None if any(a in _HELP for a in sys.argv[1:]) else cli.check_command_line(sys.argv)
  except (cli.CommandLineError, ValueError) as e:
    bad_input(e)
  argv = _define_config(config, sys.argv)
  with preemption.watching():  # from here on, Ctrl-C and SIGTERM end in one line
    try:
      app.run(main, argv=argv)
    except preemption.Preempted as e:  # before main's own handling (flag parsing, imports)
      print(str(e), file=sys.stderr)
      sys.exit(e.exit_code)

"""Run one jaxlab experiment: python launch.py --config=configs/FILE.py[:variant] [--workdir=DIR].

The config is a file path[:variant], or the name of a config that ships with jaxlab
(--config=hybrid:quick; distributed, hybrid, ladder, mhc). Installed, the same command is
`jaxlab --config=hybrid:quick` (or `python -m jaxlab ...`) from any directory; this file only
calls it (jaxlab/launch.py).

Any config field can be overridden: --config.optim.lr=3e-4. Unknown fields,
values of the wrong type and unknown choices are errors before anything runs.
Rerunning the same command with the same --workdir resumes from its checkpoint
(a finished run prints its summary again); a workdir started with another config
is refused. SIGTERM saves a checkpoint at the step reached and stops; rerun to
resume. Exit codes: 0 done, 2 bad input (one line: error: <what> (<field or path>): <fix>;
--verbosity=1 adds the traceback), 3 diverged (a non-finite loss or
parameter; nothing non-finite was saved), 143 preempted (SIGTERM; checkpoint saved).

Several processes (hosts) run one job when each runs the same command with
--config.distributed.initialize=true (see the README's "Several processes"):
process 0 writes the files, every process takes part in each checkpoint.
"""

from jaxlab.launch import DIVERGED, _env_device_count, console, default_workdir, main

__all__ = ['DIVERGED', '_env_device_count', 'console', 'default_workdir', 'main']

if __name__ == '__main__':
  console()

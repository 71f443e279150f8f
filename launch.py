"""python launch.py --config=configs/FILE.py[:variant] [--workdir=DIR]: the `jaxlab` command,
run from a checkout. What it does, its flags and its exit codes: jaxlab/launch.py."""

from jaxlab.launch import DIVERGED, _env_device_count, console, default_workdir, main

__all__ = ['DIVERGED', '_env_device_count', 'console', 'default_workdir', 'main']

if __name__ == '__main__':
  console()

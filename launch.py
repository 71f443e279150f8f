"""python launch.py --config=configs/FILE.py[:variant] [--workdir=DIR]: the `jaxlab` command,
run from a checkout. What it does, its flags and its exit codes: jaxlab/launch.py."""

from jaxlab.launch import console

if __name__ == '__main__':
  console()

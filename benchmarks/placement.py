"""Device-resident against streamed data (data.placement): does streaming keep the device fed?

  python -m benchmarks.placement                  # the quick runs, 3 repetitions each
  python -m benchmarks.placement --reps=5 --steps=120

Each repetition runs the real trainer through launch.py in a fresh process and workdir, once
with data.placement=device and once with stream, interleaved (a noisy machine drifts alike for
both). A run's img/s is summary.json's throughput_img_s: training steps only, each step's time
including any wait for its batch (input_wait_s, also reported). The table gives the medians and
stream/device; the issue asks for at least 0.9 at the CPU quick sizes. Results:
benchmarks/results/placement_<device>_<date>.json.
"""

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

from benchmarks.workloads import default_out

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = {
    # LeNet-5 on the digits, 4 simulated devices, batch 64, one step per dispatch.
    'lenet/quick': ['--config=configs/distributed.py:quick', "--config.arms=('sync',)",
                    '--config.seeds=()'],
    # The mHC quick ViT (regular residual) on the digits, batch 64, 23 steps per dispatch.
    'vit/quick': ['--config=configs/mhc.py:quick', "--config.mhc.arms=('regular',)"],
}


def run_once(args, placement, steps):
  """summary.json of one run of `args` at `placement`, `steps` steps, in a fresh workdir."""
  with tempfile.TemporaryDirectory() as workdir:
    cmd = [sys.executable, 'launch.py', *args, f'--workdir={workdir}', '--config.progress=false',
           f'--config.train.steps={steps}', f'--config.data.placement={placement}']
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    if proc.returncode:
      raise RuntimeError(f'{shlex.join(cmd)} failed:\n{proc.stderr[-3000:]}')
    found = [os.path.join(d, 'summary.json') for d, _, files in os.walk(workdir)
             if 'summary.json' in files]
    with open(found[0]) as f:
      return json.load(f)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  p = argparse.ArgumentParser(prog='python -m benchmarks.placement',
                              description=__doc__.split('\n')[0])
  p.add_argument('--only', default='', help=f'comma-separated of {", ".join(WORKLOADS)}')
  p.add_argument('--reps', type=int, default=3)
  p.add_argument('--steps', type=int, default=60)
  p.add_argument('--out', default='')
  args = p.parse_args(argv)
  import jax
  device_kind = jax.devices()[0].device_kind
  rows = []
  for name in [w for w in args.only.split(',') if w] or list(WORKLOADS):
    runs = {'device': [], 'stream': []}
    for rep in range(args.reps):
      for placement in runs:
        s = run_once(WORKLOADS[name], placement, args.steps)
        assert s['data_placement'] == placement, s['data_placement']
        runs[placement].append({k: s[k] for k in ('throughput_img_s', 'input_wait_s',
                                                  'avg_step_time_s', 'timed_steps', 'nll')})
        print(f'{name} rep {rep} {placement}: {s["throughput_img_s"]:,.0f} img/s, waited '
              f'{s["input_wait_s"]:.3f} s for input', file=sys.stderr, flush=True)
    med = {k: statistics.median(r['throughput_img_s'] for r in v) for k, v in runs.items()}
    rows.append({'workload': name, 'runs': runs, 'device_img_s': med['device'],
                 'stream_img_s': med['stream'], 'stream_over_device': med['stream'] / med['device'],
                 # The same indices: the same parameters, so the same final loss.
                 'same_result': len({r['nll'] for v in runs.values() for r in v}) == 1})
  result = {'benchmark': 'placement', 'device_kind': device_kind, 'cpu_count': os.cpu_count(),
            'jax_version': jax.__version__, 'steps': args.steps, 'reps': args.reps,
            'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
            'command': 'python -m benchmarks.placement ' + shlex.join(argv), 'rows': rows}
  out = args.out or default_out('placement', device_kind, small=False)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w') as f:
    json.dump(result, f, indent=2)
  lines = ['| workload | device img/s | stream img/s | stream / device (≥ 0.9 asked) | '
           'same result |', '| --- | ---: | ---: | ---: | --- |']
  lines += [f'| {r["workload"]} | {r["device_img_s"]:,.0f} | {r["stream_img_s"]:,.0f} | '
            f'{r["stream_over_device"]:.2f} | {r["same_result"]} |' for r in rows]
  print(f'{device_kind}, jax {jax.__version__}, median of {args.reps}, {args.steps} steps\n\n'
        + '\n'.join(lines) + f'\n\nwrote {out}')


if __name__ == '__main__':
  main()

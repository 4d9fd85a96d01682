"""The throughput benchmark's analytic counts against XLA's own, and benchmarks/accelerator_check.sh (dry run, and a
run against a fake python that records its calls)."""

import os
import subprocess

import jax
import jax.numpy as jnp
import pytest

from rlsel import env as env_lib
from rlsel import proxy
from rlsel.agents import networks
from rlsel.configlib import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "accelerator_check.sh")


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


@pytest.mark.parametrize("hidden", [0, 32])
def test_proxy_forward_flops_match_xla(hidden):
  c = base_config()
  c.proxy.hidden = hidden
  spec = proxy.spec_from_config(c, 3)
  params = proxy.init_params(jax.random.PRNGKey(0), spec, 64)
  x = jnp.ones((128, 64), jnp.float32)
  xla = _xla_flops(lambda p, x: proxy.logits_fn(spec, p, x), params, x)
  analytic = proxy.score_flops(spec, 64, 128)
  assert 0.9 * xla <= analytic <= 1.1 * xla + 128 * 3 * 4  # matmuls counted; bias adds and activations are extra


def test_network_forward_flops_match_xla():
  c, f = 16, 6
  feats = jnp.ones((c, f), jnp.float32)
  obs = env_lib.Obs(dyn=jnp.ones((c, 4)), glob=jnp.ones((2,)), action_mask=jnp.ones((c,), bool))
  net = networks.init(jax.random.PRNGKey(2), 32, feats, obs)
  batch = jax.tree.map(lambda a: jnp.broadcast_to(a, (64,) + a.shape), obs)
  xla = _xla_flops(lambda p, o: networks.apply(32, p, feats, o), net, batch)
  analytic = 64 * networks.forward_flops(32, c) + 2.0 * c * f * 32  # + embed_static, once per call
  assert 0.8 * xla <= analytic <= 1.05 * xla  # XLA also counts the GELUs and adds


def test_step_bytes_share_the_reward_split_across_episodes():
  spec = proxy.spec_from_config(base_config(), 2)
  one, many = proxy.step_bytes(spec, 384, 2, 2000, 1), proxy.step_bytes(spec, 384, 2, 2000, 100)
  assert one == 2 * spec.batch_size * 384 * 4 + 2000 * 384 * 4
  assert many < one and many > 2 * spec.batch_size * 384 * 4


def test_accelerator_check_dry_run_prints_its_commands():
  out = subprocess.run([SCRIPT, "--dry-run", "--workdir", "/tmp/w"], capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert "pip install -q -e .[cuda]" in lines[0]
  assert any("rlsel.main --config=configs/glue.py --workdir=/tmp/w/main --config.target.dtype=bfloat16" in l
             for l in lines)
  assert any("rlsel.bench.throughput" in l for l in lines)
  assert "nothing executed" in lines[-1]
  no_install = subprocess.run([SCRIPT, "--dry-run", "--no-install"], capture_output=True, text=True, timeout=60)
  assert "pip install" not in no_install.stdout
  bad = subprocess.run([SCRIPT, "--bogus"], capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr


def test_accelerator_check_runs_every_step_and_prints_one_block(tmp_path):
  fake = tmp_path / "python"
  calls = tmp_path / "calls"
  fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n'
                  'case "$*" in *rlsel.main*) exit 3 ;; *throughput*) echo "ppo_env_steps_per_s=12.5" ;; esac\n')
  fake.chmod(0o755)
  env = dict(os.environ, PYTHON=str(fake))
  out = subprocess.run([SCRIPT, "--workdir", str(tmp_path / "w")], capture_output=True, text=True, timeout=60,
                       env=env)
  assert out.returncode == 1  # the main job failed (exit 3): reported, the rest still ran
  assert len(calls.read_text().splitlines()) == 4
  assert "FAIL  main_job" in out.stdout and "ok    throughput" in out.stdout
  block = out.stdout.split("===== accelerator_check figures =====")[1]
  assert "ppo_env_steps_per_s=12.5" in block and "accelerator_check_ok=0" in block

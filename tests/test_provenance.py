"""The machine fingerprint (provenance.fingerprint): read on this machine, its digest stable and
moved by exactly the facts that change training speed; and the batch job a record ran in."""

from __future__ import annotations

import pytest
import torch

from energy_lib import provenance

CPUINFO = {"vendor_id": "GenuineIntel", "cpu family": "6", "model": "143", "stepping": "8",
           "model name": "Intel(R) Xeon(R) Platinum 8480+",
           "flags": "fpu sse avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 hypervisor"}


def test_the_fingerprint_of_this_machine_holds_every_field():
    facts = provenance.fingerprint(torch.device("cpu"))
    for name in (*provenance.SPEED_FIELDS, "cpu_model", "ram_total_gb", "onednn_version", "blas"):
        assert name in facts, name
    assert facts["usable_cores"] >= 1 and facts["ram_total_gb"] > 0
    assert facts["torch_version"] == torch.__version__.split("+")[0]
    assert facts["torch_build"] == ("cpu" if torch.version.cuda is None else f"cuda {torch.version.cuda}")
    assert facts["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(facts["cpu_flags"]) <= set(provenance.SPEED_FLAGS)
    assert facts["gpu_name"] is None  # a CPU run names no GPU
    assert len(facts["digest"]) == 12 and int(facts["digest"], 16) >= 0
    assert provenance.fingerprint(torch.device("cpu"))["digest"] == facts["digest"]  # stable


def test_the_digest_moves_with_a_speed_flag_and_only_with_speed_facts(monkeypatch):
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: dict(CPUINFO))
    amx = provenance.fingerprint()
    assert amx["cpu_flags"] == ["amx_bf16", "amx_tile", "avx2", "avx512_bf16", "avx512f", "fma"]
    assert amx["cpu_vendor"] == "GenuineIntel" and amx["cpu_model_number"] == "143"
    assert provenance.cpu_bf16_native(amx)
    without = dict(CPUINFO, flags=CPUINFO["flags"].replace("avx512_bf16 amx_tile amx_bf16 ", ""))
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: without)
    emulated = provenance.fingerprint()
    assert emulated["digest"] != amx["digest"] and not provenance.cpu_bf16_native(emulated)
    # a flag that does not change speed (a hypervisor's) and the RAM leave the digest alone
    monkeypatch.setattr(provenance, "_cpuinfo",
                        lambda: dict(CPUINFO, flags=CPUINFO["flags"].replace(" hypervisor", "")))
    monkeypatch.setattr(provenance, "total_ram_gb", lambda: 999.0)
    assert provenance.fingerprint()["digest"] == amx["digest"]


def test_the_machine_line_names_the_processor_flags_build_and_digest(monkeypatch):
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: dict(CPUINFO))
    facts = provenance.fingerprint()
    line = provenance.describe_machine(facts)
    assert line.startswith("Intel(R) Xeon(R) Platinum 8480+ (family 6 model 143")
    assert "avx512_bf16" in line and "amx_bf16" in line
    assert f"torch {facts['torch_version']}" in line and facts["digest"] in line
    assert f"{facts['usable_cores']} cores" in line


def test_every_record_s_provenance_carries_the_fingerprint():
    facts = provenance.collect(torch.device("cpu"))
    assert facts["fingerprint"]["digest"] == facts["fingerprint_digest"]
    assert facts["machine"] == provenance.describe_machine(facts["fingerprint"])


def test_bf16_without_the_flags_is_named_emulated_and_with_them_native(monkeypatch):
    from energy_lib.training.device import emulated_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: dict(CPUINFO))
    native = provenance.fingerprint(cpu)
    assert [emulated_precision(p, cpu, native) for p in ("fp32", "bf16", "amp")] == [None] * 3
    plain = dict(CPUINFO, flags="fpu sse avx2 fma avx512f")
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: plain)
    emulated = provenance.fingerprint(cpu)
    assert emulated_precision("fp32", cpu, emulated) is None
    for precision in ("bf16", "amp"):  # amp is bfloat16 autocast on a CPU
        line = emulated_precision(precision, cpu, emulated)
        assert line.startswith(f"{precision} (bfloat16 autocast) is emulated on this CPU "
                               "(Intel(R) Xeon(R) Platinum 8480+: no avx512_bf16")
        assert line.endswith("a software-path effect, not a property of 16-bit arithmetic")
    t4 = {"gpu_name": "Tesla T4", "gpu_bf16_native": False}
    gpu = torch.device("cuda")
    assert "this GPU (Tesla T4: no native bf16)" in emulated_precision("bf16", gpu, t4)
    assert emulated_precision("amp", gpu, t4) is None  # float16 with loss scaling on CUDA
    assert emulated_precision("bf16", gpu, {"gpu_name": "H100", "gpu_bf16_native": True}) is None


def test_the_record_says_whether_its_device_computes_bf16_natively(monkeypatch):
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: dict(CPUINFO, flags="avx2 fma"))
    assert provenance.collect(torch.device("cpu"))["bf16_native"] is False
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: dict(CPUINFO))
    assert provenance.collect(torch.device("cpu"))["bf16_native"] is True


@pytest.fixture
def no_scheduler(monkeypatch):
    """An environment without any scheduler's variables (the tests may run inside a job)."""
    for scheduler in provenance.SCHEDULERS:
        for name in (scheduler.job_id, scheduler.array_task_id, scheduler.array_job_id,
                     scheduler.job_name, *scheduler.requires):
            if name:
                monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_slurm_job_is_named_in_the_provenance(no_scheduler):
    no_scheduler.setenv("SLURM_JOB_ID", "4242")
    facts = provenance.collect(torch.device("cpu"))
    assert facts["scheduler"] == "slurm" and facts["scheduler_job_id"] == "4242"
    assert facts["scheduler_array_task_id"] is None and facts["scheduler_job_name"] is None
    no_scheduler.setenv("SLURM_ARRAY_JOB_ID", "4240")
    no_scheduler.setenv("SLURM_ARRAY_TASK_ID", "0")  # SLURM arrays may start at 0
    no_scheduler.setenv("SLURM_JOB_NAME", "widths")
    assert provenance.scheduler_job() == {
        "scheduler": "slurm", "scheduler_job_id": "4242", "scheduler_array_job_id": "4240",
        "scheduler_array_task_id": "0", "scheduler_job_name": "widths"}


def test_without_a_scheduler_the_provenance_names_none(no_scheduler):
    facts = provenance.collect(torch.device("cpu"))
    assert {key: facts[key] for key in provenance.SCHEDULER_KEYS} == dict.fromkeys(
        provenance.SCHEDULER_KEYS)
    assert all(not isinstance(facts[key], (dict, list)) for key in provenance.SCHEDULER_KEYS)


def test_a_generic_job_id_is_sge_only_beside_sge_s_own_variables(no_scheduler):
    no_scheduler.setenv("JOB_ID", "77")
    no_scheduler.setenv("SGE_TASK_ID", "undefined")  # what SGE sets outside an array job
    assert provenance.scheduler_job()["scheduler"] is None
    no_scheduler.setenv("SGE_ROOT", "/opt/sge")
    job = provenance.scheduler_job()
    assert job["scheduler"] == "sge" and job["scheduler_job_id"] == "77"
    assert job["scheduler_array_task_id"] is None


@pytest.mark.parametrize("variables,expected", [
    ({"PBS_JOBID": "123.server", "PBS_ARRAYID": "5"}, ("pbs", "123.server", "5")),
    ({"LSB_JOBID": "99", "LSB_JOBINDEX": "0"}, ("lsf", "99", None)),  # 0: not an array job
    ({"LSB_JOBID": "99", "LSB_JOBINDEX": "3"}, ("lsf", "99", "3")),
])
def test_pbs_and_lsf_jobs_are_named(no_scheduler, variables, expected):
    for name, value in variables.items():
        no_scheduler.setenv(name, value)
    job = provenance.scheduler_job()
    assert (job["scheduler"], job["scheduler_job_id"], job["scheduler_array_task_id"]) == expected

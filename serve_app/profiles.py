"""Hardware profiles: the one place that decides replicas, CPU/GPU shares and batch sizes.

The builder (`deployments/app.py`) turns a profile into `@serve.deployment` options;
`configs/` and `cluster/` are generated from these objects (`python -m configs.generate`).
Figures marked `estimate` were not measured on that hardware.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Autoscaling(BaseModel):
    model_config = ConfigDict(frozen=True)
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    target_ongoing_requests: float = Field(gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas > max_replicas")
        return self


# What a replica of a `one_loop` group starts with; its log lines still go to stderr as well.
ONE_LOOP_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_LOG_TO_STDERR": "1"}


class GroupResources(BaseModel):
    """What one replica group gets: replicas, per-replica CPU/GPU/memory, admission."""

    model_config = ConfigDict(frozen=True)
    num_replicas: int = Field(default=1, ge=1)
    autoscaling: Autoscaling | None = None
    num_cpus: float = Field(default=0.25, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    memory_bytes: int | None = Field(default=None, ge=0)
    # Device memory one replica uses (estimate); Ray does not track it, the placement check does.
    gpu_memory_bytes: int | None = Field(default=None, ge=0)
    max_ongoing_requests: int = Field(default=64, ge=1)
    max_queued_requests: int = -1
    # Serve's per-request access log line, written by the replica for every HTTP request and
    # every handle call: on the search path that is two log records per search. Off by default
    # (errors are still logged; writes are in the audit log); on for debugging.
    access_log: bool = False
    # Serve's request handling, its handle router and the replica's own code on one event loop
    # (`RAY_SERVE_THROUGHPUT_OPTIMIZED` in the replica's process only: cluster-wide it also
    # breaks handle calls from code without a running loop, which the offline jobs make). The
    # groups run their model calls, vector searches and index rebuilds in threads, so the loop
    # stays free for requests.
    one_loop: bool = True

    @property
    def max_replicas(self) -> int:
        return self.autoscaling.max_replicas if self.autoscaling else self.num_replicas

    def ray_actor_options(self) -> dict:
        options: dict = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        if self.memory_bytes:
            options["memory"] = self.memory_bytes
        if self.one_loop:
            options["runtime_env"] = {"env_vars": dict(ONE_LOOP_ENV)}
        return options

    def scaling_options(self) -> dict:
        """Replica count and admission limits, without resources."""
        opts: dict = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
        }
        if self.autoscaling is not None:
            opts["autoscaling_config"] = self.autoscaling.model_dump()
        else:
            opts["num_replicas"] = self.num_replicas
        return opts

    def deployment_options(self) -> dict:
        return {
            "ray_actor_options": self.ray_actor_options(),
            "logging_config": {"enable_access_log": self.access_log},
            **self.scaling_options(),
        }


class BatchedGroup(GroupResources):
    """A group that batches requests across callers with `@serve.batch`."""

    batch_size: int = Field(default=32, ge=1)
    batch_wait_timeout_s: float = Field(default=0.005, ge=0)
    torch_threads: int | None = Field(default=None, ge=1)
    device: str = "cpu"
    # Hugging Face id or local directory. None: the embedder uses settings.embedding_model,
    # the compressor is off unless settings name a model.
    model: str | None = None

    def user_config(self) -> dict:
        return {
            "max_batch_size": self.batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
        }

    @model_validator(mode="after")
    def _device_matches_gpu(self) -> Self:
        if (self.num_gpus > 0) != self.device.startswith("cuda"):
            raise ValueError(f"device {self.device!r} does not match num_gpus={self.num_gpus}")
        return self


class LLMGroup(GroupResources):
    """The LLM replica group. `backend` none keeps ingestion extractive (no LLM).

    For `vllm`, `num_gpus` is the GPU share of each engine worker (one per tensor-parallel
    rank). Ray Serve LLM reserves it in a placement group, so the replica actor's own
    `ray_actor_options` carry no GPU (a GPU there would be added on top of the bundle).
    """

    backend: str = Field(default="none", pattern="^(none|openai|vllm)$")
    # Ray Serve LLM builds this replica's actor options itself.
    one_loop: bool = False
    model: str | None = None
    dtype: str = "auto"
    quantization: str | None = None
    # Ray accelerator type ("T4", "L4", "A100"): pins engine workers to that GPU kind.
    accelerator_type: str | None = None
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int = Field(default=8192, ge=256)
    max_num_seqs: int = Field(default=64, ge=1)

    @model_validator(mode="after")
    def _gpu_share(self) -> Self:
        if self.backend != "vllm":
            return self
        if not self.model or self.num_gpus <= 0:
            raise ValueError("backend vllm needs a model and num_gpus > 0")
        if self.num_gpus < 1:
            if self.tensor_parallel_size != 1:
                raise ValueError("tensor parallelism needs whole GPUs per rank")
            # vLLM takes gpu_memory_utilization x device memory; Ray's share must cover it.
            if self.gpu_memory_utilization > self.num_gpus:
                raise ValueError(
                    f"gpu_memory_utilization {self.gpu_memory_utilization} exceeds "
                    f"the GPU share {self.num_gpus}"
                )
        elif self.num_gpus != 1:
            raise ValueError("num_gpus per engine worker is a fraction or exactly 1")
        return self

    @property
    def gpus_per_replica(self) -> float:
        return self.num_gpus * self.tensor_parallel_size

    def ray_actor_options(self) -> dict:
        options = super().ray_actor_options()
        options.pop("num_gpus", None)
        return options

    def placement_group_config(self) -> dict:
        """`LLMConfig.placement_group_config`: one bundle per tensor-parallel rank."""
        strategy = "STRICT_PACK" if self.tensor_parallel_size > 1 else "PACK"
        return {"bundle_per_worker": {"GPU": self.num_gpus}, "strategy": strategy}

    def engine_kwargs(self) -> dict:
        """`LLMConfig.engine_kwargs` for vLLM."""
        kwargs: dict = {
            "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel_size": self.tensor_parallel_size,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
        }
        if self.quantization:
            kwargs["quantization"] = self.quantization
        return kwargs


GiB = 1024**3
MiB = 1024**2


class NodeSpec(BaseModel):
    """One kind of node the profile runs on (for the placement check and manifests).

    Sizes stay below what GKE leaves allocatable on `machine_type` (it keeps ~10-15% of
    memory for the kubelet and system daemons).

    `cpus` is what Ray may schedule (`--num-cpus`); `memory_bytes` is the pod or VM memory
    given to Ray. Of that, the object store and Ray's own processes (raylet, Serve proxy;
    GCS, dashboard and Serve controller on the head) are held back from `--memory`.
    """

    model_config = ConfigDict(frozen=True)
    name: str
    count: int = 1
    cpus: float
    gpus: int = 0
    memory_bytes: int
    gpu_type: str | None = None
    gpu_memory_bytes: int | None = None
    head: bool = False
    object_store_bytes: int | None = None
    system_reserved_bytes: int = 0
    # What the pod or VM is: container CPU limit (the head has more than the 0 Ray schedules)
    # and the GCP machine type the `ray up` file asks for.
    container_cpus: float | None = None
    machine_type: str | None = None

    @model_validator(mode="after")
    def _gpu_fields(self) -> Self:
        if self.gpus and not (self.gpu_type and self.gpu_memory_bytes):
            raise ValueError(f"node {self.name}: GPUs need gpu_type and gpu_memory_bytes")
        return self

    @property
    def object_store(self) -> int:
        # Ray's default is 30% of available memory when not set.
        return self.object_store_bytes or int(0.3 * self.memory_bytes)

    def ray_memory_bytes(self) -> int:
        """The `memory` resource Ray schedules on this node (`--memory`)."""
        return self.memory_bytes - self.object_store - self.system_reserved_bytes


class HardwareProfile(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    description: str
    nodes: tuple[NodeSpec, ...]
    ingress: GroupResources
    embedder: BatchedGroup
    memory_index: GroupResources
    worker: GroupResources
    compressor: BatchedGroup | None = None
    llm: LLMGroup = LLMGroup()
    # Qdrant local mode holds a file lock: only one MemoryIndex replica may own it.
    embedded_stores: bool = False
    http_host: str = "0.0.0.0"
    http_port: int = 8000

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.embedded_stores and self.memory_index.max_replicas > 1:
            raise ValueError("embedded stores allow one MemoryIndex replica (Qdrant file lock)")
        on_t4 = any(n.gpu_type == "T4" for n in self.nodes)
        if self.llm.backend == "vllm" and on_t4 and self.llm.dtype not in ("half", "float16"):
            raise ValueError("T4 has no bfloat16: the LLM dtype must be half")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")
        return self

    @property
    def gpu_nodes(self) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.nodes if n.gpus)

    def groups(self) -> dict[str, GroupResources]:
        """Deployment name -> group, for the deployments this profile runs.

        The compressor is listed when the profile names its model; the LLM when it is
        hosted in the application (`vllm`).
        """
        out: dict[str, GroupResources] = {
            "Ingress": self.ingress,
            "Embedder": self.embedder,
            "MemoryIndex": self.memory_index,
            "IngestWorker": self.worker,
        }
        if self.compressor is not None and self.compressor.model:
            out["Compressor"] = self.compressor
        if self.llm.backend == "vllm":
            out["LLM"] = self.llm
        return out


LOCAL = HardwareProfile(
    name="local",
    description="CPU only, embedded PostgreSQL and Qdrant local mode (a laptop or this 2-core box)",
    nodes=(NodeSpec(name="local", cpus=2, memory_bytes=8 * GiB, head=True),),
    http_host="127.0.0.1",
    ingress=GroupResources(num_cpus=0.1, max_ongoing_requests=256),
    # Two torch threads: the embedder is the only CPU-heavy group while ingesting.
    embedder=BatchedGroup(
        num_cpus=1.0,
        max_ongoing_requests=256,
        batch_size=64,
        batch_wait_timeout_s=0.003,
        torch_threads=2,
    ),
    memory_index=GroupResources(num_cpus=0.25, max_ongoing_requests=256),
    worker=GroupResources(num_cpus=0.25, max_ongoing_requests=16),
    # No LLMLingua-2 weights are bundled: compression is off unless a model is configured.
    # 0.4 CPU so that, when one is configured, all five groups fit in 2 CPUs.
    compressor=BatchedGroup(num_cpus=0.4, max_ongoing_requests=256, batch_size=32),
    llm=LLMGroup(backend="none", num_cpus=0.0),
    embedded_stores=True,
)

LLMLINGUA2 = "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank"
QWEN_7B = "Qwen/Qwen2.5-7B-Instruct"
# Official AWQ 4-bit build: about 5.6 GB of weights against 15.2 GB in 16 bit.
QWEN_7B_AWQ = "Qwen/Qwen2.5-7B-Instruct-AWQ"

# Device memory of one replica (estimates: CUDA context + weights + peak activations).
EMBEDDER_GPU_MEM = 1280 * MiB  # MiniLM-L6, 22M params, batch 128-256 x 256 tokens
COMPRESSOR_GPU_MEM = 2 * GiB  # mBERT-base, 178M params fp32, batch 32 x 512 tokens
COMPRESSOR_GPU_MEM_BIG = 3 * GiB  # same, batch 64

# Ray head pod/VM for every cluster profile: schedules nothing (num-cpus 0).
HEAD = NodeSpec(
    name="head",
    head=True,
    cpus=0,
    container_cpus=4,
    memory_bytes=12 * GiB,
    object_store_bytes=2 * GiB,
    system_reserved_bytes=4 * GiB,
    machine_type="e2-standard-4",
)

Replicas = int | Autoscaling


def _replicas(replicas: Replicas) -> dict:
    if isinstance(replicas, Autoscaling):
        return {"autoscaling": replicas}
    return {"num_replicas": replicas}


def _single_gpu_node(
    machine_type: str, cpus: float, mem_gib: int, gpu: str, gpu_mib: int, store_gib: int
) -> NodeSpec:
    return NodeSpec(
        name="gpu",
        cpus=cpus,
        memory_bytes=mem_gib * GiB,
        gpus=1,
        gpu_type=gpu,
        gpu_memory_bytes=gpu_mib * MiB,
        object_store_bytes=store_gib * GiB,
        system_reserved_bytes=1 * GiB,
        machine_type=machine_type,
    )


def _cuda_batched(
    *,
    batch_size: int,
    batch_wait_timeout_s: float,
    gpu_memory_bytes: int,
    num_gpus: float,
    memory_bytes: int,
    cpus: int = 1,
    replicas: Replicas = 1,
    model: str | None = None,
) -> BatchedGroup:
    """A batched group on a GPU share: one torch thread per CPU; admission holds four batches
    in flight and sixteen queued."""
    return BatchedGroup(
        **_replicas(replicas),
        num_cpus=cpus,
        num_gpus=num_gpus,
        memory_bytes=memory_bytes,
        gpu_memory_bytes=gpu_memory_bytes,
        device="cuda",
        torch_threads=cpus,
        model=model,
        batch_size=batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
        max_ongoing_requests=4 * batch_size,
        max_queued_requests=16 * batch_size,
    )


def _gpu_embedder(batch_size: int, **share) -> BatchedGroup:
    return _cuda_batched(
        batch_size=batch_size,
        batch_wait_timeout_s=0.005,
        gpu_memory_bytes=EMBEDDER_GPU_MEM,
        **share,
    )


def _gpu_compressor(batch_size: int, gpu_memory_bytes: int, **share) -> BatchedGroup:
    return _cuda_batched(
        batch_size=batch_size,
        batch_wait_timeout_s=0.01,
        gpu_memory_bytes=gpu_memory_bytes,
        model=LLMLINGUA2,
        **share,
    )


def _vllm_group(
    accelerator_type: str,
    *,
    max_num_seqs: int,
    num_cpus: float = 1,
    model: str = QWEN_7B,
    dtype: str = "bfloat16",
    **engine,
) -> LLMGroup:
    """The vLLM group: admission holds twice the engine's sequences in flight, four times queued."""
    return LLMGroup(
        backend="vllm",
        accelerator_type=accelerator_type,
        num_cpus=num_cpus,
        model=model,
        dtype=dtype,
        max_num_seqs=max_num_seqs,
        max_ongoing_requests=2 * max_num_seqs,
        max_queued_requests=4 * max_num_seqs,
        **engine,
    )


def _ingress(
    replicas: Replicas, cpus: float, memory_bytes: int, *, ongoing: int, queued: int
) -> GroupResources:
    return GroupResources(
        **_replicas(replicas),
        num_cpus=cpus,
        memory_bytes=memory_bytes,
        max_ongoing_requests=ongoing,
        max_queued_requests=queued,
    )


# The worker polls PostgreSQL rather than serving requests: a fixed count, no autoscaling.
def _worker(replicas: int, cpus: float, memory_bytes: int) -> GroupResources:
    return GroupResources(
        num_replicas=replicas, num_cpus=cpus, memory_bytes=memory_bytes, max_ongoing_requests=8
    )


def _memory_index(replicas: Replicas, memory_bytes: int) -> GroupResources:
    return GroupResources(
        **_replicas(replicas),
        num_cpus=1,
        memory_bytes=memory_bytes,
        max_ongoing_requests=64,
        max_queued_requests=256,
    )


# 1x T4 16 GB (15360 MiB usable). A 7B model in fp16 needs ~14.2 GiB of weights alone, so
# the LLM is the AWQ 4-bit 7B (~5.2 GiB): KV room stays ~4.5 GiB (estimate ~80k tokens).
# Turing has no bf16 and no Marlin kernels: dtype half, vLLM's plain AWQ kernels.
T4 = HardwareProfile(
    name="t4",
    description="1x NVIDIA T4 16 GB (GCP n1-standard-8 + T4), external PostgreSQL and Qdrant",
    nodes=(HEAD, _single_gpu_node("n1-standard-8", 7, 24, "T4", 15360, 3)),
    ingress=_ingress(2, 0.5, 1 * GiB, ongoing=256, queued=1024),
    embedder=_gpu_embedder(128, num_gpus=0.1, memory_bytes=5 * GiB // 2),
    compressor=_gpu_compressor(32, COMPRESSOR_GPU_MEM, num_gpus=0.1, memory_bytes=5 * GiB // 2),
    memory_index=_memory_index(2, 2 * GiB),
    worker=_worker(2, 0.5, 3 * GiB // 2),
    llm=_vllm_group(
        "T4",
        model=QWEN_7B_AWQ,
        quantization="awq",
        dtype="half",
        num_gpus=0.8,
        memory_bytes=5 * GiB,
        gpu_memory_utilization=0.75,
        max_model_len=8192,
        max_num_seqs=16,
    ),
)

# 1x L4 24 GB (23034 MiB). Qwen2.5-7B bf16 is ~14.2 GiB; 0.82 x 22.5 GiB leaves ~2.4 GiB
# of KV cache (estimate ~45k tokens): 16 extraction prompts of 1-2k tokens at once.
L4 = HardwareProfile(
    name="l4",
    description="1x NVIDIA L4 24 GB (GCP g2-standard-8), external PostgreSQL and Qdrant",
    nodes=(HEAD, _single_gpu_node("g2-standard-8", 7, 26, "L4", 23034, 3)),
    ingress=T4.ingress,
    embedder=T4.embedder.model_copy(update={"num_gpus": 0.08}),
    compressor=T4.compressor.model_copy(update={"num_gpus": 0.08}),
    memory_index=T4.memory_index,
    worker=T4.worker,
    llm=_vllm_group(
        "L4",
        num_gpus=0.84,
        memory_bytes=7 * GiB,
        gpu_memory_utilization=0.82,
        max_model_len=8192,
        max_num_seqs=16,
    ),
)

# 1x A100 80 GB. 0.78 x 80 GiB = 62.4 GiB for vLLM: ~45 GiB of KV cache (estimate ~800k
# tokens), so 32k context and 128 concurrent sequences; two embedders and two compressors
# share the remaining 0.2 of the GPU.
A100 = HardwareProfile(
    name="a100",
    description="1x NVIDIA A100 80 GB (GCP a2-ultragpu-1g), external PostgreSQL and Qdrant",
    nodes=(HEAD, _single_gpu_node("a2-ultragpu-1g", 11, 140, "A100", 81920, 16)),
    ingress=_ingress(2, 0.5, 2 * GiB, ongoing=512, queued=2048),
    embedder=_gpu_embedder(256, replicas=2, num_gpus=0.05, memory_bytes=4 * GiB),
    compressor=_gpu_compressor(
        64, COMPRESSOR_GPU_MEM_BIG, replicas=2, num_gpus=0.05, memory_bytes=4 * GiB
    ),
    memory_index=_memory_index(
        Autoscaling(min_replicas=2, max_replicas=4, target_ongoing_requests=16), 4 * GiB
    ),
    worker=_worker(2, 0.5, 2 * GiB),
    llm=_vllm_group(
        "A100",
        num_gpus=0.8,
        memory_bytes=16 * GiB,
        gpu_memory_utilization=0.78,
        max_model_len=32768,
        max_num_seqs=128,
    ),
)

# 8x A100 80 GB on one a2-ultragpu-8g plus two CPU nodes for the HTTP/retrieval side.
# Up to six LLM replicas own a GPU each (data parallel: a 7B model gains nothing from
# tensor parallelism); embedders and compressors pack 4 to a GPU on the other two, in any
# start order (Ray best-fits fractional GPUs).
A100X8 = HardwareProfile(
    name="a100x8",
    description="8x NVIDIA A100 80 GB (GCP a2-ultragpu-8g) + 2 CPU nodes, external stores",
    nodes=(
        HEAD,
        NodeSpec(
            name="gpu",
            cpus=94,
            memory_bytes=1200 * GiB,
            gpus=8,
            gpu_type="A100",
            gpu_memory_bytes=81920 * MiB,
            object_store_bytes=64 * GiB,
            system_reserved_bytes=2 * GiB,
            machine_type="a2-ultragpu-8g",
        ),
        NodeSpec(
            name="cpu",
            count=2,
            cpus=15,
            memory_bytes=52 * GiB,
            object_store_bytes=4 * GiB,
            system_reserved_bytes=1 * GiB,
            machine_type="n2-standard-16",
        ),
    ),
    ingress=_ingress(
        Autoscaling(min_replicas=2, max_replicas=8, target_ongoing_requests=64),
        1,
        2 * GiB,
        ongoing=512,
        queued=4096,
    ),
    embedder=_gpu_embedder(
        256,
        replicas=Autoscaling(min_replicas=2, max_replicas=4, target_ongoing_requests=256),
        cpus=2,
        num_gpus=0.25,
        memory_bytes=4 * GiB,
    ),
    compressor=_gpu_compressor(
        64,
        COMPRESSOR_GPU_MEM_BIG,
        replicas=Autoscaling(min_replicas=2, max_replicas=4, target_ongoing_requests=64),
        cpus=2,
        num_gpus=0.25,
        memory_bytes=4 * GiB,
    ),
    memory_index=_memory_index(
        Autoscaling(min_replicas=4, max_replicas=16, target_ongoing_requests=16), 4 * GiB
    ),
    worker=_worker(4, 1, 2 * GiB),
    llm=_vllm_group(
        "A100",
        autoscaling=Autoscaling(min_replicas=2, max_replicas=6, target_ongoing_requests=128),
        num_cpus=2,
        num_gpus=1,
        memory_bytes=16 * GiB,
        gpu_memory_utilization=0.9,
        max_model_len=32768,
        max_num_seqs=256,
    ),
)

PROFILES: dict[str, HardwareProfile] = {p.name: p for p in (LOCAL, T4, L4, A100, A100X8)}


def get_profile(name: str) -> HardwareProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}") from None

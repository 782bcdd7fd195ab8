import json
import re
from pathlib import Path

import yaml
from ray.autoscaler._private.util import validate_config

CONFIG = Path(__file__).parent.parent / "cluster.yaml"


def load():
    return yaml.safe_load(CONFIG.read_text())


def test_matches_rays_cluster_schema():
    validate_config(load())  # ray's own ray-schema.json, plus its consistency checks


def test_nodes_use_our_security_group_not_rays_default():
    config = load()
    # The group Ray makes itself opens SSH to 0.0.0.0/0 and merges provider.security_group rules into it.
    assert "security_group" not in config["provider"]
    for node_type in config["available_node_types"].values():
        assert node_type["node_config"]["SecurityGroupIds"]
    assert "0.0.0.0" not in yaml.safe_dump(config)


def test_documented_ingress_is_ssh_from_one_address_and_the_cluster_itself():
    rules = [line for line in CONFIG.read_text().splitlines() if "authorize-security-group-ingress" in line]
    assert rules
    for rule in rules:
        assert re.search(r"--protocol tcp --port 22 --cidr \S+/32$", rule) or rule.endswith("--source-group $SG"), rule


def test_dashboard_is_local_and_every_node_requires_the_token():
    config = load()
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    for commands in (head, worker):
        assert "RAY_AUTH_MODE=token ray start" in commands
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_decoding_and_gpu_workers_autoscale_from_zero():
    nodes = load()["available_node_types"]
    for name, family in (("cpu_worker", "c7i."), ("gpu_worker", "g5.")):
        assert nodes[name]["min_workers"] == 0 and nodes[name]["max_workers"] >= 1
        assert nodes[name]["node_config"]["InstanceType"].startswith(family)
    # Decoding is what limits a GPU: the cluster can hold far more decoding cores than GPUs.
    assert nodes["cpu_worker"]["max_workers"] > nodes["gpu_worker"]["max_workers"]


def policies():
    """The policy JSON blocks of docs/aws-iam.md, by their heading."""
    text = (CONFIG.parent / "docs" / "aws-iam.md").read_text()
    return {name: json.loads(body) for name, body in re.findall(r"## (\w+) policy.*?```json\n(.*?)```", text, re.S)}


def allowed(policy):
    return [(action, statement) for statement in policy["Statement"] if statement["Effect"] == "Allow"
            for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])]


def test_head_and_workers_have_their_own_least_privilege_profiles():
    nodes = load()["available_node_types"]
    head, *workers = (nodes[name]["node_config"]["IamInstanceProfile"]["Arn"] for name in ("head", "cpu_worker", "gpu_worker"))
    assert head.endswith("instance-profile/centerclip-ray-head")
    assert all(worker.endswith("instance-profile/centerclip-ray-worker") for worker in workers)
    found = policies()
    assert set(found) == {"Worker", "Head"}
    for name, policy in found.items():
        for action, statement in allowed(policy):
            assert "*" not in action, f"{name}: wildcard action {action}"
            if action.startswith("s3:"):
                assert all("*" != resource.split(":::")[-1][:1] for resource in
                           ([statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]))
    # Workers decode: they read the inputs and can do nothing else.
    assert {action for action, _ in allowed(found["Worker"])} == {"s3:ListBucket", "s3:GetObject"}
    assert all("INPUT_BUCKET" in statement["Resource"] for _, statement in allowed(found["Worker"]))
    # Only the index prefix is writable, only by the head; EC2 changes are scoped to this cluster.
    head_actions = allowed(found["Head"])
    writes = [statement for action, statement in head_actions if action in ("s3:PutObject", "s3:DeleteObject")]
    assert writes and all(statement["Resource"] == "arn:aws:s3:::INDEX_BUCKET/INDEX_PREFIX/*" for statement in writes)
    for action, statement in head_actions:
        if action in ("ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances"):
            assert statement["Condition"]["StringEquals"]["ec2:ResourceTag/ray-cluster-name"] == load()["cluster_name"]
        if action == "iam:PassRole":
            assert statement["Resource"].endswith(":role/centerclip-ray-worker")


def test_says_the_security_group_is_the_perimeter():
    text = " ".join(" ".join(line.lstrip("# ") for line in CONFIG.read_text().splitlines()).split())
    assert "security group is the perimeter" in text and "metrics port answers without the token" in text
    assert "chmod 600 ~/.ray/auth_token" in text


def test_pools_fit_each_worker_node_type_and_grow_with_the_autoscaler():
    """Sizing from cluster.yaml's node types as data (no cluster): with the head at CPU 0 and no
    worker up yet, a decoder and an encoder fit together on each node type the autoscaler can add,
    on CPUs and on GPUs, and both pools are left to grow."""
    from centerclip.index.job import IndexJob
    from centerclip.index.pools import ClusterShape, node_types, pools

    config = load()
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    types = node_types(config)
    assert {(shape.cpus, shape.gpus) for shape in types} == {(32.0, 0.0), (4.0, 1.0)}  # the workers, never the head
    for job in (IndexJob(inputs=("videos",)), IndexJob(inputs=("videos",), gpus_per_encoder=1.0)):
        sizes = pools(job, ClusterShape(nodes=(), node_types=types))
        assert sizes.decoders[1] is None and sizes.encoders[1] is None  # the autoscaler adds what is asked
        for shape in types if not job.gpus_per_encoder else [t for t in types if t.gpus]:
            assert sizes.decoder_cpus + sizes.encoder_cpus <= shape.cpus
            assert sizes.encoder_gpus <= shape.gpus
    # Each type alone, as a fixed cluster of one such node: both stages fit on it and are bounded.
    for shape in types:
        job = IndexJob(inputs=("videos",), gpus_per_encoder=1.0 if shape.gpus else 0.0)
        sizes = pools(job, ClusterShape(nodes=(shape,)))
        high = sizes.encoders[1]
        assert high is not None and high >= 1
        assert high * sizes.encoder_cpus + sizes.decoder_cpus <= shape.cpus
        assert sizes.decoders[1] >= 1 and sizes.decoders[1] * sizes.decoder_cpus + high * sizes.encoder_cpus <= shape.cpus

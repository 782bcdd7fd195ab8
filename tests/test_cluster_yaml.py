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


def test_gpu_workers_autoscale_from_zero():
    workers = load()["available_node_types"]["gpu_worker"]
    assert workers["min_workers"] == 0 and workers["max_workers"] >= 1
    assert workers["node_config"]["InstanceType"].startswith("g5.")

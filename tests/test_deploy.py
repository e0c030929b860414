"""deploy/'s cluster manifests, validated offline: the core kinds with kubernetes-validate (it ships Kubernetes'
schemas), the TFJob against the OpenAPI schema of the Training Operator's CRD vendored in deploy/schemas/.
Each check is also shown to refuse a broken copy."""

import copy
import os
import re

import jsonschema
import kubernetes_validate
import pytest
import yaml

from keras_deeplab.recipe import load_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
KUBERNETES_VERSION = "1.30"


def documents(name):
    with open(os.path.join(DEPLOY, name)) as file:
        return {document["kind"]: document for document in yaml.safe_load_all(file) if document}


def tfjob_schema():
    with open(os.path.join(DEPLOY, "schemas", "kubeflow.org_tfjobs.yaml")) as file:
        crd = yaml.safe_load(file)
    (version,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def unknown_fields(document, schema, path="") -> list[str]:
    """Keys the structural schema does not declare (what the API server would prune without a word)."""
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(document, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in document.items():
            if properties is not None and key in properties:
                found += unknown_fields(value, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif properties is not None and path:  # the root's apiVersion/kind/metadata are the API server's
                found.append(f"{path}.{key}")
    elif isinstance(document, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(document):
            found += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return found


def validate_tfjob(document):
    schema = tfjob_schema()
    jsonschema.Draft7Validator(schema).validate(document)
    unknown = unknown_fields(document, schema)
    if unknown:
        raise jsonschema.ValidationError(f"fields the TFJob schema does not have: {unknown}")


def validate_core(document):
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_core_kinds_are_valid_kubernetes_objects_and_a_broken_one_is_refused():
    objects = {**documents("serving.yaml"), "PersistentVolumeClaim": documents("tfjob.yaml")["PersistentVolumeClaim"]}
    assert set(objects) == {"Deployment", "Service", "PersistentVolumeClaim"}
    for document in objects.values():
        validate_core(document)

    broken = copy.deepcopy(objects["Service"])
    del broken["spec"]["ports"][0]["port"]  # required
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(broken)
    broken = copy.deepcopy(objects["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(broken)


def test_the_tfjob_fits_the_training_operators_schema_and_a_broken_one_is_refused():
    tfjob = documents("tfjob.yaml")["TFJob"]
    assert tfjob["apiVersion"] == "kubeflow.org/v1"
    validate_tfjob(tfjob)

    broken = copy.deepcopy(tfjob)
    del broken["spec"]["tfReplicaSpecs"]  # required
    with pytest.raises(jsonschema.ValidationError):
        validate_tfjob(broken)
    broken = copy.deepcopy(tfjob)
    del broken["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"]  # required
    with pytest.raises(jsonschema.ValidationError):
        validate_tfjob(broken)
    broken = copy.deepcopy(tfjob)
    broken["spec"]["tfReplicaSpecs"]["Worker"]["replica"] = 2  # a typo the API server would drop
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        validate_tfjob(broken)


def test_the_manifests_agree_with_the_project():
    """The TFJob runs a shipped recipe on a shared run folder in the container the operator configures; the
    serving probe asks for the model the Dockerfile's model config serves."""
    job = documents("tfjob.yaml")
    assert job["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    worker = job["TFJob"]["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] >= 2
    (container,) = worker["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow" and container["command"][:2] == ["keras-deeplab", "train"]
    recipe = container["command"][container["command"].index("--recipe") + 1]
    overrides = [value for flag, value in zip(container["args"][0::2], container["args"][1::2], strict=True)]
    assert set(container["args"][0::2]) == {"--set"}
    assert load_recipe(recipe, [o for o in overrides if not o.startswith("model.backbone_weights")])
    run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("run_dir="))
    (runs,) = [mount for mount in container["volumeMounts"] if run_dir.startswith(mount["mountPath"] + "/")]
    (volume,) = [v for v in worker["template"]["spec"]["volumes"] if v["name"] == runs["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == job["PersistentVolumeClaim"]["metadata"]["name"]
    assert container["resources"]["requests"]

    serving = documents("serving.yaml")
    (server,) = serving["Deployment"]["spec"]["template"]["spec"]["containers"]
    with open(os.path.join(ROOT, "serving", "config", "models.config")) as file:
        (model_name,) = re.findall(r'name: "(\w+)"', file.read())
    assert server["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{model_name}"
    assert server["resources"]["requests"] and server["resources"]["limits"]
    rest = next(port for port in server["ports"] if port["containerPort"] == 8501)
    assert any(
        port["port"] == 8501 and port["targetPort"] == rest["name"] for port in serving["Service"]["spec"]["ports"]
    )
    assert serving["Service"]["spec"]["selector"] == serving["Deployment"]["spec"]["selector"]["matchLabels"]

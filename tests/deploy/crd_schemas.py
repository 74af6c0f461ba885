"""JSON Schemas for the custom resources in deploy/kubernetes, written here.

The operators' published CRD schemas (CloudNativePG's Cluster and ScheduledBackup,
the Barman Cloud plugin's ObjectStore, the Prometheus Operator's ServiceMonitor and
PrometheusRule) are not shipped with this repository; these are subsets of them
covering the fields the manifests use, with the same names, types, enumerations,
patterns and required fields, and `additionalProperties: false` at every level, so
a misspelt or misplaced field fails. A field not listed here must be checked
against the operator's API reference before it is added to both the manifest and
this file.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

# Prometheus durations, as the Prometheus Operator's CRDs spell them.
DURATION = (
    "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)


def obj(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def string_map() -> Schema:
    return {"type": "object", "additionalProperties": {"type": "string"}}


STRING: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
QUANTITY: Schema = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
METADATA: Schema = {"type": "object"}
RESOURCES = obj(
    {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
    }
)
COMPRESSION: Schema = {"enum": ["bzip2", "gzip", "lz4", "snappy", "xz", "zstd"]}
SECRET_KEY_SELECTOR = obj({"name": STRING, "key": STRING}, ("key", "name"))


def resource(api_version: str, kind: str, spec: Schema) -> Schema:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
    }


STORAGE = obj({"size": STRING, "storageClass": STRING})

CNPG_CLUSTER = resource(
    "postgresql.cnpg.io/v1",
    "Cluster",
    obj(
        {
            "instances": {"type": "integer", "minimum": 1},
            "imageName": STRING,
            "primaryUpdateStrategy": {"enum": ["supervised", "unsupervised"]},
            "enableSuperuserAccess": BOOL,
            "bootstrap": obj(
                {
                    "initdb": obj(
                        {"database": STRING, "owner": STRING, "secret": obj({"name": STRING})}
                    )
                }
            ),
            "storage": STORAGE,
            "walStorage": STORAGE,
            "affinity": obj(
                {
                    "enablePodAntiAffinity": BOOL,
                    "topologyKey": STRING,
                    "podAntiAffinityType": {"enum": ["preferred", "required"]},
                }
            ),
            "resources": RESOURCES,
            "postgresql": obj({"parameters": string_map()}),
            "plugins": {
                "type": "array",
                "items": obj(
                    {
                        "name": STRING,
                        "enabled": BOOL,
                        "isWALArchiver": BOOL,
                        "parameters": string_map(),
                    },
                    ("name",),
                ),
            },
        },
        ("instances",),
    ),
)

CNPG_SCHEDULED_BACKUP = resource(
    "postgresql.cnpg.io/v1",
    "ScheduledBackup",
    obj(
        {
            "backupOwnerReference": {"enum": ["none", "self", "cluster"]},
            "cluster": obj({"name": STRING}, ("name",)),
            "immediate": BOOL,
            "method": {"enum": ["barmanObjectStore", "volumeSnapshot", "plugin"]},
            "online": BOOL,
            "pluginConfiguration": obj({"name": STRING, "parameters": string_map()}, ("name",)),
            "schedule": STRING,
            "suspend": BOOL,
            "target": {"enum": ["primary", "prefer-standby"]},
        },
        ("cluster", "schedule"),
    ),
)

BARMAN_OBJECT_STORE = resource(
    "barmancloud.cnpg.io/v1",
    "ObjectStore",
    obj(
        {
            "retentionPolicy": {"type": "string", "pattern": "^[1-9][0-9]*[dwm]$"},
            "configuration": obj(
                {
                    "destinationPath": {"type": "string", "minLength": 1},
                    "endpointURL": STRING,
                    "s3Credentials": obj(
                        {
                            "accessKeyId": SECRET_KEY_SELECTOR,
                            "secretAccessKey": SECRET_KEY_SELECTOR,
                            "region": SECRET_KEY_SELECTOR,
                            "sessionToken": SECRET_KEY_SELECTOR,
                            "inheritFromIAMRole": BOOL,
                        }
                    ),
                    "wal": obj(
                        {
                            "compression": COMPRESSION,
                            "maxParallel": {"type": "integer", "minimum": 1},
                        }
                    ),
                    "data": obj(
                        {
                            "compression": COMPRESSION,
                            "jobs": {"type": "integer", "minimum": 1},
                        }
                    ),
                },
                ("destinationPath",),
            ),
        },
        ("configuration",),
    ),
)

SERVICE_MONITOR = resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    obj(
        {
            "selector": obj({"matchLabels": string_map()}),
            "namespaceSelector": obj({"any": BOOL, "matchNames": {"type": "array"}}),
            "targetLabels": {"type": "array", "items": STRING},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": obj(
                    {
                        "port": STRING,
                        "path": STRING,
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": {"type": "string", "pattern": DURATION},
                        "scrapeTimeout": {"type": "string", "pattern": DURATION},
                        "relabelings": {
                            "type": "array",
                            "items": obj(
                                {
                                    "action": {
                                        "enum": [
                                            "replace",
                                            "Replace",
                                            "keep",
                                            "Keep",
                                            "drop",
                                            "Drop",
                                            "labelmap",
                                            "LabelMap",
                                            "labeldrop",
                                            "LabelDrop",
                                            "labelkeep",
                                            "LabelKeep",
                                        ]
                                    },
                                    "sourceLabels": {
                                        "type": "array",
                                        "items": {
                                            "type": "string",
                                            "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$",
                                        },
                                    },
                                    "targetLabel": STRING,
                                    "regex": STRING,
                                    "replacement": STRING,
                                    "separator": STRING,
                                }
                            ),
                        },
                    }
                ),
            },
        },
        ("selector",),
    ),
)

PROMETHEUS_RULE = resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    obj(
        {
            "groups": {
                "type": "array",
                "items": obj(
                    {
                        "name": {"type": "string", "minLength": 1},
                        "interval": {"type": "string", "pattern": DURATION},
                        "labels": string_map(),
                        "limit": {"type": "integer"},
                        "rules": {
                            "type": "array",
                            "items": obj(
                                {
                                    "alert": STRING,
                                    "record": STRING,
                                    "expr": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                    "for": {"type": "string", "pattern": DURATION},
                                    "keep_firing_for": {"type": "string", "pattern": DURATION},
                                    "labels": string_map(),
                                    "annotations": string_map(),
                                },
                                ("expr",),
                            ),
                        },
                    },
                    ("name",),
                ),
            }
        }
    ),
)

SCHEMAS: dict[tuple[str, str], Schema] = {
    ("postgresql.cnpg.io/v1", "Cluster"): CNPG_CLUSTER,
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): CNPG_SCHEDULED_BACKUP,
    ("barmancloud.cnpg.io/v1", "ObjectStore"): BARMAN_OBJECT_STORE,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
}

//! The ImagePullJob AdmissionReview both webhook benchmarks send.

use serde_json::{Value, json};

pub fn review(uid: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "operation": "CREATE", "name": "job-with-always", "namespace": "default",
            "kind": {"group": "apps.kruise.io", "version": "v1alpha1", "kind": "ImagePullJob"},
            "resource": {"group": "apps.kruise.io", "version": "v1alpha1", "resource": "imagepulljobs"},
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": {
                "apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
                "metadata": {"name": "job-with-always", "namespace": "default"},
                "spec": {"image": "nginx:1.9.1", "parallelism": 10, "selector": {"names": ["node-1", "node-2"]},
                         "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 1200, "ttlSecondsAfterFinished": 300},
                         "pullPolicy": {"backoffLimit": 3, "timeoutSeconds": 300}}
            },
            "oldObject": null, "dryRun": false
        }
    })
}

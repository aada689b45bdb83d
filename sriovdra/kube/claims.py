"""Reading ResourceClaims for NodePrepareResources."""

from __future__ import annotations

from sriovdra.driver.core import ClaimFetchError
from sriovdra.kube.api import ApiError, call


class ApiClaimSource:
    def __init__(self, api_client) -> None:
        from kubernetes.client import ResourceV1Api

        self.api = ResourceV1Api(api_client)

    def get_claim(self, namespace: str, name: str) -> dict:
        try:
            return call(self.api.read_namespaced_resource_claim, name, namespace)
        except ApiError as e:
            raise ClaimFetchError(str(e)) from None

"""Bad requests get a clear status and never take the server down; bearer-token auth; TLS and mTLS."""

from __future__ import annotations

import shutil
import subprocess

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serve.protos import load
from serve.tensors import encode_bytes
from tests.helpers.bundles import IMG
from tests.helpers.servers import ServerThread, local_config, oip_request

pb, pb_grpc = load("inference")
cpb, cpb_grpc = load("continual")
pytestmark = pytest.mark.timeout(120)
OK_PIXELS = np.zeros((2, 3, IMG, IMG), np.float32)
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def server(bundle_root):
    running = ServerThread(local_config(bundle_root, max_message_bytes=1 << 20))
    yield running
    running.stop()


def nan_pixels():
    x = OK_PIXELS.copy()
    x[1, 0, 0, 0] = np.nan
    return x


def short_raw():
    request = oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS})
    request.raw_input_contents[0] = request.raw_input_contents[0][:-4]
    return request


def bad_datatype():
    request = oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS})
    request.inputs[0].datatype = "FP99"
    return request


def extra_raw():
    request = oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS})
    request.raw_input_contents.append(b"\0")
    return request


def truncated_bytes():
    request = oip_request(pb, "pipeline", {"images": [b"x"]})
    request.raw_input_contents[0] = encode_bytes([b"abcdef"])[:-2]
    return request


CASES = {  # name → (request builder, expected code, a fragment of the message)
    "wrong dtype": (lambda: oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS.astype(np.float64)}),
                    INVALID, "FP32"),
    "wrong shape": (lambda: oip_request(pb, "pipeline", {"pixel_values": np.zeros((2, 3, 5, 5), np.float32)}),
                    INVALID, "shape"),
    "wrong rank": (lambda: oip_request(pb, "pipeline", {"pixel_values": np.zeros((3, IMG, IMG), np.float32)}),
                   INVALID, "shape"),
    "raw size mismatch": (short_raw, INVALID, "bytes"),
    "NaN": (lambda: oip_request(pb, "pipeline", {"pixel_values": nan_pixels()}), INVALID, "NaN"),
    "empty batch": (lambda: oip_request(pb, "pipeline", {"pixel_values": np.zeros((0, 3, IMG, IMG), np.float32)}),
                    INVALID, "empty"),
    "task hint -1": (lambda: oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS,
                                                          "task_id": np.array([0, -1])}), INVALID, "tasks 0..1"),
    "task hint out of range": (lambda: oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS,
                                                                    "task_id": np.array([2, 0])}), INVALID, "0..1"),
    "task hint int32": (lambda: oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS,
                                                             "task_id": np.array([0, 1], np.int32)}), INVALID, "INT64"),
    "hint count": (lambda: oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS, "task_id": np.array([0])}),
                   INVALID, "one per image"),
    "classifier task_id -1": (lambda: oip_request(pb, "classifier", {"pixel_values": OK_PIXELS,
                                                                     "task_id": np.array([-1, 0])}), INVALID, "0..1"),
    "classifier missing input": (lambda: oip_request(pb, "classifier", {"pixel_values": OK_PIXELS}), INVALID,
                                 "takes inputs"),
    "classifier batch sizes": (lambda: oip_request(pb, "classifier", {"pixel_values": OK_PIXELS,
                                                                      "task_id": np.array([0])}), INVALID, "batch"),
    "corrupt image": (lambda: oip_request(pb, "pipeline", {"images": [b"\x89PNG\r\n\x1a\nnot really"]}), INVALID,
                      "image 0"),
    "no images": (lambda: oip_request(pb, "pipeline", {"images": []}), INVALID, "empty"),
    "truncated BYTES": (truncated_bytes, INVALID, "BYTES"),
    "images and pixels": (lambda: oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS, "images": [b"x"]}),
                          INVALID, "exactly one"),
    "no input": (lambda: oip_request(pb, "pipeline", {}), INVALID, "exactly one"),
    "unknown input": (lambda: oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS, "mask": OK_PIXELS}), INVALID,
                      "unknown inputs"),
    "unknown output": (lambda: oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS}, outputs=("logits2",)),
                       INVALID, "do not exist"),
    "unknown datatype": (bad_datatype, INVALID, "FP99"),
    "raw count": (extra_raw, INVALID, "raw_input_contents"),
    "unknown model": (lambda: oip_request(pb, "resnet", {"pixel_values": OK_PIXELS}), NOT_FOUND, "pipeline"),
    "unknown version": (lambda: oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS}, version="9"), NOT_FOUND,
                        "version 1"),
    "oversize message": (lambda: oip_request(pb, "pipeline", {"pixel_values": np.zeros((1500, 3, IMG, IMG),
                                                                                          np.float32)}),
                         grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
}


def assert_still_serving(target: str) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    response = stub.ModelInfer(oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS}), timeout=30)
    assert response.model_version == "1"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_request_gets_a_clear_status(server, case):
    build, code, fragment = CASES[case]
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(build(), timeout=30)
    assert error.value.code() == code, error.value.details()
    assert fragment in (error.value.details() or ""), error.value.details()
    assert_still_serving(server.target)


@pytest.mark.parametrize("request_kwargs, fragment", [
    ({"task_hint": -1}, "0..1"), ({"task_hint": 5}, "0..1"),
    ({"pixel_values": cpb.Tensor(shape=[1, 3, IMG, IMG], data=b"\0" * 10)}, "bytes"),
    ({"images": [b"GIF89a broken"]}, "image 0"), ({}, "send encoded images"),
])
def test_classify_rejects_bad_requests(server, request_kwargs, fragment):
    stub = cpb_grpc.ContinualClassifierStub(grpc.insecure_channel(server.target))
    request = cpb.ClassifyRequest(**{"images": [b"x"]} | request_kwargs) if "task_hint" in request_kwargs else \
        cpb.ClassifyRequest(**request_kwargs)
    with pytest.raises(grpc.RpcError) as error:
        stub.Classify(request, timeout=30)
    assert error.value.code() == INVALID and fragment in error.value.details(), error.value.details()
    assert_still_serving(server.target)


def test_malformed_protobuf_bytes(server):
    """Bytes that are no ModelInferRequest at all: an error status, and the server keeps serving."""
    channel = grpc.insecure_channel(server.target)
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=lambda x: x, response_deserializer=lambda x: x)
    with pytest.raises(grpc.RpcError) as error:
        call(b"\xff\xff\xff\xff garbage", timeout=10)
    assert error.value.code() != grpc.StatusCode.OK
    assert_still_serving(server.target)


def test_bearer_token_auth(bundle_root, tmp_path):
    server = ServerThread(local_config(bundle_root, auth_tokens=("s3cret",), admin_tokens=("adm1n",)))
    try:
        channel = grpc.insecure_channel(server.target)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS})
        for metadata, detail in ((None, "missing"), ([("authorization", "Bearer wrong")], "invalid"),
                                 ([("authorization", "s3cret")], "invalid")):
            with pytest.raises(grpc.RpcError) as error:
                stub.ModelInfer(request, timeout=10, metadata=metadata)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED and detail in error.value.details()
        good = [("authorization", "Bearer s3cret")]
        assert stub.ModelInfer(request, timeout=30, metadata=good).model_version == "1"
        health = health_pb2_grpc.HealthStub(channel)  # probes need no token
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        admin = cpb_grpc.ContinualAdminStub(channel)
        with pytest.raises(grpc.RpcError) as error:  # a user token is not an admin token
            admin.Reload(cpb.ReloadRequest(), timeout=10, metadata=good)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = admin.Reload(cpb.ReloadRequest(), timeout=60, metadata=[("authorization", "Bearer adm1n")])
        assert reply.version == 1 and reply.message == "already serving it"
        assert stub.ModelInfer(request, timeout=30, metadata=good).model_version == "1"
    finally:
        server.stop()


def test_admin_calls_refused_without_admin_tokens(server):
    admin = cpb_grpc.ContinualAdminStub(grpc.insecure_channel(server.target))
    with pytest.raises(grpc.RpcError) as error:
        admin.Reload(cpb.ReloadRequest(), timeout=10)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED and "--admin-token-file" in error.value.details()


def make_certificates(folder) -> dict:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, with the openssl CLI."""
    run = lambda *args: subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=test-ca")
    for name, extra in (("server", ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]), ("client", [])):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name if name == 'client' else 'localhost'}", *extra)
        ext = ["-copy_extensions", "copy"] if name == "server" else []
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", *ext)
    return {n: folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make test certificates")
def test_mutual_tls(bundle_root, tmp_path):
    files = make_certificates(tmp_path)
    server = ServerThread(local_config(bundle_root, tls_cert=files["server.pem"], tls_key=files["server.key"],
                                       tls_client_ca=files["ca.pem"]))
    try:
        from serve.client import channel

        request = oip_request(pb, "pipeline", {"pixel_values": OK_PIXELS})
        with_cert = channel(server.target, ca=files["ca.pem"], cert=files["client.pem"], key=files["client.key"])
        assert pb_grpc.GRPCInferenceServiceStub(with_cert).ModelInfer(request, timeout=30).model_version == "1"
        for insecure in (channel(server.target, ca=files["ca.pem"]), grpc.insecure_channel(server.target)):
            with pytest.raises(grpc.RpcError) as error:
                pb_grpc.GRPCInferenceServiceStub(insecure).ModelInfer(request, timeout=10)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()

"""A local Google Cloud Storage for the tests: ``gcp-storage-emulator`` (PyPI) on 127.0.0.1, with
the two parts of the GCS JSON API it leaves out and the project's clients rely on:

* a download answers with the object's ``x-goog-generation`` / ``x-goog-metageneration``
  headers, as GCS does (tensorstore, under Orbax's OCDBT checkpoints, reads the generation of
  every object it reads: "Malformed StorageGeneration" without them);
* an upload with ``ifGenerationMatch=0`` fails with 412 Precondition Failed when the object
  exists (the create-if-absent write of the work-directory lock; the emulator ignores
  preconditions).

    python tests/gcs_emulator.py PORT BUCKET     # serves until killed

:func:`environment` gives the variables that point gcsfs, tensorstore and google-cloud-storage
(tensorboardX) at it."""

from __future__ import annotations

import json
import sys
import threading
from http import HTTPStatus


def environment(port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
            # gcsfs's zonal/hierarchical-namespace probe calls an API the emulator lacks
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def _object_name(request) -> str | None:
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data
    return data.get("meta", {}).get("name") if isinstance(data, dict) else None


def patch_handlers() -> None:
    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    download, insert = objects.download, objects.insert

    def download_with_generation(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        try:
            obj = storage.get_file_obj(request.params["bucket_name"],
                                       request.params["object_id"])
        except NotFound:
            return
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj["metageneration"])

    def insert_if_absent(request, response, storage, *args, **kwargs):
        if request.query.get("ifGenerationMatch") == ["0"]:
            name = _object_name(request)
            try:
                storage.get_file_obj(request.params["bucket_name"], name)
            except NotFound:
                pass
            else:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "Precondition Failed",
                                         "errors": [{"reason": "conditionNotMet"}]}})
                return
        return insert(request, response, storage, *args, **kwargs)

    objects.download = download_with_generation  # objects.get(alt=media) calls it by name
    for _, handlers in server.HANDLERS:
        for method, fn in list(handlers.items()):
            if fn is download:
                handlers[method] = download_with_generation
            elif fn is insert:
                handlers[method] = insert_if_absent


def main(port: int, bucket: str) -> None:
    import logging

    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
    patch_handlers()
    srv = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    srv.start()
    print(json.dumps({"port": port, "bucket": bucket}), flush=True)
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])

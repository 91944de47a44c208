"""File upload (streamed, size-limited), download and metadata (rest-api #39-#43)."""
from __future__ import annotations

import uuid
from email.message import Message
from typing import Any

import asyncpg
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp_apigami import docs, response_schema

from genai_backend.answers import ANSWERS, respond
from genai_backend.auth.middleware import CHAT, CHAT_OR_READ, DUAL, USER_ID, USER_OR_AGENT, auth
from genai_backend.db import POOL, queries
from genai_backend.errors import ApiError, BadRequestError, ServerError, ValidationFailed
from genai_backend.limits import MAX_FILE_NAME_LENGTH
from genai_backend.responses import json_response
from genai_backend.schemas.agents import clamp
from genai_backend.schemas.files import (
    FileCreatedSchema,
    FileListQuerySchema,
    FilePathSchema,
    FileSchema,
    SessionFileSchema,
    SessionFilesQuerySchema,
)
from genai_backend.schemas.users import DetailSchema
from genai_backend.storage import FILES, FileDownload, Received, SaveFailed, TooLarge, suffix_of
from genai_backend.validation import FieldError, error, parse_uuid, path, query

SAVE_FAILED = "Failed to save file"
MALFORMED = "There was an error parsing the body"
# Form fields other than the file are UUIDs: anything longer is not one, and is not buffered.
_MAX_FIELD = 1024
# What a whole upload body may carry beyond MAX_UPLOAD_BYTES: boundaries, part headers, the ids.
MAX_FORM_OVERHEAD = 64 * 1024
_UPLOAD_DOC: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "request_id": {"type": "string", "format": "uuid"},
                   "session_id": {"type": "string", "format": "uuid"}}}}}}}


class PayloadTooLargeError(ApiError):
    status = 413


def _not_found(file_id: Any) -> BadRequestError:
    return BadRequestError(f"File with id {file_id} does not exist")


def _decode_param(value: str | tuple[str, str, str]) -> str:
    # What python-multipart (the reference's parser) yields: UTF-8, falling back to Latin-1.
    raw = value[-1].encode("latin-1") if isinstance(value, tuple) else value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def disposition(part: BodyPartReader) -> tuple[str | None, str | None]:
    """(name, filename) of a part, parsed like the reference: quotes and `;` inside quotes are
    honoured, RFC 2231 `filename*` decoded, and nothing else touched (no path stripping)."""
    message = Message()
    message["content-type"] = part.headers.get(hdrs.CONTENT_DISPOSITION, "")
    params = dict(message.get_params(failobj=[])[1:])
    name, filename = params.get("name"), params.get("filename")
    return (_decode_param(name) if name is not None else None,
            _decode_param(filename) if filename is not None else None)


def _utf8_headers(part: BodyPartReader) -> bool:
    try:
        for value in part.headers.values():
            value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class BodyTooLarge(Exception):
    """The whole multipart body (not only the file) is over its limit."""


class BodyBudget:
    """Bounds the total bytes of one upload request: the file's limit plus room for the other parts."""

    def __init__(self, request: web.Request, max_file_bytes: int) -> None:
        self.content = request.content
        self.limit = max_file_bytes + MAX_FORM_OVERHEAD
        if request.content_length is not None and request.content_length > self.limit:
            raise BodyTooLarge()

    def check(self) -> None:
        # total_bytes counts what the connection delivered, whichever part it belongs to.
        if self.content.total_bytes > self.limit:
            raise BodyTooLarge()


async def _read_field(part: BodyPartReader, budget: BodyBudget) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(_MAX_FIELD):
        budget.check()
        if len(data) < _MAX_FIELD:
            data += chunk
    return data[:_MAX_FIELD].decode("utf-8", "replace")


class FilesView(web.View):
    URL_PATH = "/files"

    @docs(tags=["files"], summary="Upload a file (multipart, streamed to disk, size-limited)", **_UPLOAD_DOC)
    @auth(USER_OR_AGENT, scope=CHAT)
    @response_schema(FileCreatedSchema, 201)
    @response_schema(DetailSchema, 413, description="Larger than MAX_UPLOAD_BYTES")
    @response_schema(DetailSchema, 500, description="Failed to save file")
    async def post(self) -> web.Response:
        file_id = uuid.uuid4()
        received, fields, errors = await self._receive(file_id)
        try:
            if errors or received is None:
                raise ValidationFailed(errors)
            await received.commit()
            await queries.create_file(
                self.request.app[POOL], file_id=file_id, creator_id=self.request[USER_ID],
                session_id=fields.get("session_id"), request_id=fields.get("request_id"),
                mimetype=fields["mimetype"], original_name=fields["original_name"],
                internal_name=received.path.name, from_agent="request_id" in fields and "session_id" in fields)
        except (SaveFailed, asyncpg.PostgresError):
            # Whatever failed after the bytes reached the disk, they must not stay there.
            if received is not None:
                received.discard()
            raise ServerError(SAVE_FAILED) from None
        except BaseException:
            if received is not None:
                received.discard()
            raise
        return json_response({"id": file_id}, status=201)

    async def _receive(self, file_id: uuid.UUID) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
        """Read every part once, streaming the file to disk; validate in the order of rest-api #39."""
        received: Received | None = None
        fields: dict[str, Any] = {}
        raw: dict[str, str] = {}
        file_error: FieldError | None = None
        store = self.request.app[FILES]
        try:
            # aiohttp's `request.content_type` runs the e-mail header parser (~0.3 ms); a plain
            # split is what the reference's parser (python-multipart) does anyway.
            mime = parse_mimetype(self.request.headers.get(hdrs.CONTENT_TYPE, ""))
            if (mime.type, mime.subtype) == ("multipart", "form-data"):
                budget = BodyBudget(self.request, store.max_bytes)
                reader = await self.request.multipart()
                async for part in reader:
                    budget.check()
                    if not isinstance(part, BodyPartReader):
                        # A nested multipart would be read whole, unbounded, to skip it.
                        raise BadRequestError(MALFORMED)
                    if not _utf8_headers(part):
                        # aiohttp keeps undecodable bytes as surrogates, which PostgreSQL cannot store.
                        raise BadRequestError(MALFORMED)
                    name, filename = disposition(part)
                    if name == "file" and filename is None and received is None:
                        raw_value = await _read_field(part, budget)
                        file_error = FieldError("value_error", f"Value error, Expected UploadFile, received: {str}",
                                                {"error": {}}, input=raw_value)
                    elif name == "file" and filename is not None and received is None:
                        if len(filename) > MAX_FILE_NAME_LENGTH:
                            file_error = FieldError("string_too_long", f"String should have at most "
                                                    f"{MAX_FILE_NAME_LENGTH} characters",
                                                    {"max_length": MAX_FILE_NAME_LENGTH}, input=filename)
                            continue
                        if "\x00" in filename:
                            # PostgreSQL text cannot hold NUL, and the name must come back verbatim.
                            file_error = FieldError("value_error", "Value error, File name must not contain NUL "
                                                    "characters", {"error": {}}, input=filename)
                            continue
                        file_error = None
                        fields["original_name"] = filename
                        fields["mimetype"] = part.headers.get(hdrs.CONTENT_TYPE, "").replace("\x00", "")
                        received = await store.receive(part, file_id, suffix_of(filename))
                    elif name in ("request_id", "session_id"):
                        raw[name] = await _read_field(part, budget)
                    else:
                        await _read_field(part, budget)  # a part nobody reads still counts
                budget.check()
        except TooLarge:
            raise PayloadTooLargeError(f"File is too large: the limit is {store.max_bytes} bytes") from None
        except BodyTooLarge:
            if received is not None:
                received.discard()
            raise PayloadTooLargeError(f"Request body is too large: the limit is {store.max_bytes} bytes for the "
                                       f"file plus {MAX_FORM_OVERHEAD} bytes for the rest of the form") from None
        except SaveFailed:
            raise ServerError(SAVE_FAILED) from None
        except BaseException as exc:
            if received is not None:
                received.discard()
            if isinstance(exc, (ValueError, HttpProcessingError)):
                # Starlette's answer to a body its multipart parser cannot read.
                raise BadRequestError(MALFORMED) from None
            raise
        errors: list[dict[str, Any]] = []
        if file_error is not None:
            errors.append(error(file_error.type, ("body", "file"), file_error.msg, file_error.input, file_error.ctx))
        elif received is None:
            errors.append(error("missing", ("body", "file"), "Field required", None))
        for key in ("request_id", "session_id"):
            if key in raw:
                try:
                    fields[key] = parse_uuid(raw[key])
                except FieldError as exc:
                    errors.append(error(exc.type, ("body", key), exc.msg, raw[key], exc.ctx))
        return received, fields, errors


    @docs(tags=["files"], summary="Files of one of your chat sessions (also for the master agent)")
    @auth(DUAL, scope=CHAT_OR_READ)
    @query(SessionFilesQuerySchema)
    @response_schema(SessionFileSchema(many=True), 200)
    async def get(self) -> web.Response:
        rows = queries.list_files_by_session(self.request.app[POOL], creator_id=self.request[USER_ID],
                                             session_id=self.request["query"]["session_id"])
        return json_response([dict(row) async for row in rows])


class FileView(web.View):
    URL_PATH = "/files/{file_id}"

    @docs(tags=["files"], summary="Download one of your files")
    @auth(USER_OR_AGENT, scope=CHAT_OR_READ)
    @path(FilePathSchema)
    @response_schema(DetailSchema, 400, description="Not found")
    @response_schema(DetailSchema, 500, description="Row exists, content missing on disk")
    async def get(self) -> web.StreamResponse:
        file_id = self.request["path"]["file_id"]
        row = await queries.get_file(self.request.app[POOL], file_id=file_id, creator_id=self.request[USER_ID])
        if row is None:
            raise _not_found(file_id)
        store = self.request.app[FILES]
        file_path = store.path(row["internal_name"])
        if file_path is None or not await store.existing([row["internal_name"]]):
            raise ServerError(f"Metadata of file {row['internal_id']} exists, but file was not found")
        return FileDownload(file_path, headers={
            hdrs.CONTENT_TYPE: content_type(row["mimetype"]),
            hdrs.CONTENT_DISPOSITION: f'attachment; filename="{row["internal_name"]}"',
            # Uploads are someone else's content: never let a browser guess them into HTML.
            "X-Content-Type-Options": "nosniff"})


class FileMetadataView(web.View):
    URL_PATH = "/files/{file_id}/metadata"

    @docs(tags=["files"], summary="Metadata (FileDTO) of one of your files")
    @auth(USER_OR_AGENT, scope=CHAT_OR_READ)
    @path(FilePathSchema)
    @response_schema(FileSchema, 200)
    @response_schema(DetailSchema, 400, description="Not found")
    async def get(self) -> web.Response:
        file_id = self.request["path"]["file_id"]
        row = await queries.get_file(self.request.app[POOL], file_id=file_id, creator_id=self.request[USER_ID])
        if row is None:
            raise _not_found(file_id)
        return json_response(dict(row))


class UserFilesView(web.View):
    URL_PATH = "/user/files/metadata"

    @docs(tags=["files"], summary="All your files, newest first")
    @auth(USER_OR_AGENT, scope=CHAT_OR_READ)
    @query(FileListQuerySchema)
    @response_schema(FileSchema(many=True), 200)
    async def get(self) -> web.StreamResponse:
        q = self.request["query"]
        answer = await self.request.app[ANSWERS].rows(
            self.request.app[POOL], self.request[USER_ID], queries.list_files, creator_id=self.request[USER_ID],
            offset=clamp(q["offset"]), limit=clamp(q["limit"]))
        return await respond(self.request, answer)


def content_type(mimetype: str) -> str:
    """The stored type; text without a charset is declared UTF-8 (rest-api #40)."""
    value = mimetype or "application/octet-stream"
    if value.startswith("text/") and "charset" not in value.lower():
        value += "; charset=utf-8"
    return value


VIEWS = (FilesView, FileMetadataView, FileView, UserFilesView)

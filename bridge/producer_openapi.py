"""``GET /openapi.json``: the producers' API described (OpenAPI 3.0). Pure data.

The limits come from the rules' own constants (bridge/producers.py), so the
description cannot drift from what is enforced.
"""

from __future__ import annotations

from typing import Any

from bridge.delivery import DeliveryState, Reason
from bridge.producers import MAX_BATCH, MAX_CHATS, MAX_MESSAGE_ID, PARSE_MODES, WAITING
from bridge.receipts import ReceiptEvent, ReceiptState
from bridge.recipients import MAX_RECIPIENT

_CHAT_ID = {"type": "integer", "format": "int64"}
_ERROR = {
    "type": "object",
    "required": ["status", "error"],
    "properties": {
        "status": {"type": "string", "enum": ["error"]},
        "error": {"type": "string"},
        "field": {"type": "string", "nullable": True},
        "differs": {"type": "array", "items": {"type": "string"}},
    },
}
_STATUS = {"type": "string", "enum": [s.value for s in DeliveryState]}
#: A message's status: its deliveries' state, or waiting for its recipient's link.
_MESSAGE_STATUS = {"type": "string", "enum": [WAITING, *(s.value for s in DeliveryState)]}

_MESSAGE = {
    "type": "object",
    "additionalProperties": False,
    "description": (
        "One destination kind (chat_id, chats, recipient or labels) and one content "
        "(text, or template with data)."
    ),
    "properties": {
        "message_id": {"type": "string", "minLength": 1, "maxLength": MAX_MESSAGE_ID},
        "chat_id": _CHAT_ID,
        "chats": {"type": "array", "items": _CHAT_ID, "minItems": 1, "maxItems": MAX_CHATS},
        "recipient": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_RECIPIENT,
            "description": "Your id of a user linked by POST /v1/recipients/{recipient}/link",
        },
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "text": {"type": "string"},
        "parse_mode": {"type": "string", "enum": list(PARSE_MODES), "default": "HTML"},
        "template": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,100}$"},
        "data": {"type": "object"},
        "silent": {"type": "boolean", "default": False},
        "thread_id": {"type": "integer", "format": "int64", "nullable": True},
        "buttons": {
            "type": "array",
            "description": "Rows of URL buttons; a lone button is a row of its own",
            "minItems": 1,
            "items": {
                "oneOf": [
                    {"$ref": "#/components/schemas/Button"},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"$ref": "#/components/schemas/Button"},
                    },
                ]
            },
        },
        "disable_link_preview": {"type": "boolean", "default": False},
        "wait_for_link": {
            "type": "boolean",
            "default": False,
            "description": (
                "With recipient: if the recipient is not linked yet, store the message "
                "(202, status waiting) and deliver it once the user opens a link, instead "
                "of 409; it fails (reason not_linked) if nobody links within bot.link_expiry"
            ),
        },
    },
}

_BUTTON = {
    "type": "object",
    "required": ["text", "url"],
    "additionalProperties": False,
    "properties": {"text": {"type": "string", "minLength": 1}, "url": {"type": "string"}},
}

_DELIVERY = {
    "type": "object",
    "properties": {
        "chat_id": {**_CHAT_ID, "nullable": True, "description": "null for a recipient"},
        "recipient": {"type": "string", "description": "The recipient addressed, if one was"},
        "status": _STATUS,
        "attempts": {"type": "integer"},
        "last_attempt_at": {"type": "string", "format": "date-time", "nullable": True},
        "delivered_at": {"type": "string", "format": "date-time", "nullable": True},
        "telegram_message_id": {"type": "integer", "nullable": True},
        "error": {"type": "string", "nullable": True},
        "was_ambiguous": {"type": "boolean"},
    },
}

_RECORD = {
    "type": "object",
    "required": ["message_id", "status", "created_at", "deliveries"],
    "properties": {
        "message_id": {"type": "string"},
        "status": _MESSAGE_STATUS,
        "created_at": {"type": "string", "format": "date-time"},
        "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}},
        "wait_until": {
            "type": "string",
            "format": "date-time",
            "description": "A message that waits (or waited) for its recipient's link: "
            "until when; it has no delivery",
        },
        "reason": {
            "type": "string",
            "enum": [Reason.NOT_LINKED.value],
            "description": "Why a message with no delivery failed",
        },
        "error": {"type": "string"},
        "receipts": {
            "type": "array",
            "description": "GET only: the receipts of this message sent (or being sent) to "
            "the producer's callback_url, in the order written",
            "items": {"$ref": "#/components/schemas/Receipt"},
        },
    },
}

_RECEIPT = {
    "type": "object",
    "required": ["event", "event_id", "status", "attempts", "at"],
    "properties": {
        "event": {"type": "string", "enum": [e.value for e in ReceiptEvent]},
        "event_id": {"type": "string"},
        "status": {"type": "string", "enum": [s.value for s in ReceiptState]},
        "attempts": {"type": "integer", "description": "POSTs tried so far"},
        "last_error": {"type": "string", "nullable": True},
        "at": {"type": "string", "format": "date-time"},
    },
}


_RECIPIENT_PARAMETER = {
    "name": "recipient",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_RECIPIENT},
    "description": "Your own id of the user",
}

_LINK = {
    "type": "object",
    "required": ["recipient", "link", "expires_at"],
    "properties": {
        "recipient": {"type": "string"},
        "link": {"type": "string", "description": "https://t.me/<bot>?start=<one-time token>"},
        "expires_at": {"type": "string", "format": "date-time"},
    },
}

_RECIPIENT = {
    "type": "object",
    "required": ["recipient", "linked", "linked_at"],
    "properties": {
        "recipient": {"type": "string"},
        "linked": {"type": "boolean"},
        "linked_at": {"type": "string", "format": "date-time", "nullable": True},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERR = {"$ref": "#/components/schemas/Error"}
_REC = {"$ref": "#/components/schemas/Record"}
_COMMON = {
    "401": _json(_ERR, "Missing or wrong bearer token"),
    "404": _json(_ERR, "The producer API is off (no producers: section)"),
    "503": _json(_ERR, "The store is unavailable: retry"),
}


def openapi() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Alertbridge producer API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Message": _MESSAGE,
                "Button": _BUTTON,
                "Delivery": _DELIVERY,
                "Record": _RECORD,
                "Receipt": _RECEIPT,
                "Error": _ERROR,
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/messages": {
                "post": {
                    "summary": "Send a message, once per message_id",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "maxLength": MAX_MESSAGE_ID},
                            "description": "The message_id, when the body has none",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Message"}}
                        },
                    },
                    "responses": {
                        "202": _json(_REC, "Stored: it will be delivered"),
                        "200": _json(_REC, "Stored before with the same request (replayed)"),
                        "400": _json(_ERR, "No message_id, or not JSON"),
                        "403": _json(_ERR, "A destination this producer may not address"),
                        "409": _json(
                            _ERR,
                            "The recipient is not linked: send them a link (or send with "
                            "wait_for_link: true)",
                        ),
                        "413": _json(_ERR, "Body too large"),
                        "422": _json(
                            _ERR,
                            "Malformed, refused by Telegram's rules, or the message_id "
                            "used before with another request",
                        ),
                        **_COMMON,
                    },
                }
            },
            "/v1/messages/batch": {
                "post": {
                    "summary": f"Up to {MAX_BATCH} messages in one transaction",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["messages"],
                                    "properties": {
                                        "messages": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": MAX_BATCH,
                                            "items": {"$ref": "#/components/schemas/Message"},
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {"results": {"type": "array", "items": {}}},
                            },
                            "One result per message: accepted, replayed or refused",
                        ),
                        "400": _json(_ERR, "Not JSON"),
                        "413": _json(_ERR, "Body too large"),
                        "422": _json(_ERR, "Not a list of 1 to 1000 messages"),
                        **_COMMON,
                    },
                }
            },
            "/v1/messages/{message_id}": {
                "get": {
                    "summary": "A message's status, its deliveries and its receipts",
                    "parameters": [
                        {
                            "name": "message_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json(_REC, "The message"),
                        **_COMMON,
                        "404": _json(_ERR, "Unknown to this producer (or the API is off)"),
                    },
                }
            },
            "/v1/recipients/{recipient}/link": {
                "post": {
                    "summary": "A one-time Telegram link that links the user to this recipient",
                    "parameters": [_RECIPIENT_PARAMETER],
                    "responses": {
                        "201": _json(_LINK, "The link to hand the user"),
                        "409": _json(_ERR, "The bot is not configured (no bot: section)"),
                        "422": _json(_ERR, "Not a recipient id"),
                        **_COMMON,
                        "503": _json(_ERR, "The store or Telegram (getMe) is unavailable: retry"),
                    },
                }
            },
            "/v1/recipients/{recipient}": {
                "get": {
                    "summary": "Whether the recipient is linked",
                    "parameters": [_RECIPIENT_PARAMETER],
                    "responses": {
                        "200": _json(_RECIPIENT, "The recipient"),
                        "422": _json(_ERR, "Not a recipient id"),
                        **_COMMON,
                        "404": _json(_ERR, "Never given a link (or pruned), or the API is off"),
                    },
                }
            },
        },
    }

"""The condition keys of DynamoDB's fine-grained access control, evaluated as AWS documents them (moto evaluates
none; where the guide is silent, the conservative reading - limits in D405): each item request of a DynamoDB call
gets its request context - the values of ``dynamodb:LeadingKeys``, ``dynamodb:Attributes``, ``dynamodb:Select`` and
``dynamodb:ReturnValues`` it carries - and is allowed only if some ``Allow`` statement granting its action on its
resource has every condition true for that context (D405).

What AWS puts in those keys (Amazon DynamoDB Developer Guide, "Using IAM policy conditions for fine-grained access
control", https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/specifying-conditions.html):
- ``dynamodb:LeadingKeys``: the partition key values of the items a request reaches (the table's partition key, or
  the index's for a Query of an index); multi-valued (``ForAllValues``). A ``Scan`` names none, so a ``ForAllValues``
  condition on it is vacuously true ("Scan returns all items regardless of the leading keys").
- ``dynamodb:Attributes``: the attribute names a request names - for a write its item's or key's names, the
  names its update expression writes and reads, and its condition's ("it cannot perform conditional write
  operations based on any other attributes"); every element of a document path, as the guide gives no rule for
  nested names (counting them all never under-reports; D405 amended by pi2). The key attributes are counted:
  "If you use dynamodb:Attributes, you must specify the names of all of the primary key and index key attributes
  for the table and any secondary indexes that are listed in the policy. Otherwise, DynamoDB can't use these key
  attributes to perform the requested action."
- ``dynamodb:Select``: a Query's or Scan's ``Select`` (when absent, ``SPECIFIC_ATTRIBUTES`` with a projection, else
  ``ALL_ATTRIBUTES`` on a table and ``ALL_PROJECTED_ATTRIBUTES`` on an index, as the API defaults it).
- ``dynamodb:ReturnValues``: a write's ``ReturnValues`` ("always has a value (NONE unless otherwise specified)").

Condition operators (IAM's): ``ForAllValues:`` true when every value of the key matches (no value: true),
``ForAnyValue:`` when one does (no value: false); a single-valued operator is false on a missing key unless it ends in
``IfExists``. ``StringEquals`` compares exactly, ``StringLike`` with IAM's ``*`` and ``?``. Keys in one operator and
operators in one block must all hold; the listed values of one key are alternatives. An operator or a DynamoDB key
this module does not know is an error, never a pass."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

# a request's context: each key's values (a single-valued key has one)
Context = dict[str, list[str]]
# the partition key attribute of a table (index None) or of one of its indexes
PartitionKeyOf = Callable[[str, str | None], str]

ALL_ATTRIBUTES = "ALL_ATTRIBUTES"
_KEYWORDS = frozenset({"SET", "REMOVE", "ADD", "DELETE", "AND", "OR", "NOT", "BETWEEN", "IN"})
_TOKENS = re.compile(r"#\w+|:\w+|[A-Za-z_][\w]*|\[\d+\]|\S")
_ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
_KEYS = frozenset({"dynamodb:LeadingKeys", "dynamodb:Attributes", "dynamodb:Select", "dynamodb:ReturnValues"})


class UnknownConditionError(Exception):
    """A condition operator or DynamoDB condition key the tier cannot evaluate (a test fails rather than pass it)."""


def named_attributes(expression: str | None, names: Mapping[str, str]) -> set[str]:
    """Every attribute name an expression names (``#placeholders`` resolved): each element of each document path -
    ``#r.#p`` names both, ``notes[0].text`` names ``notes`` and ``text`` - never a value, list index, keyword or
    function. AWS documents no rule for a nested path's names (D405 amended by pi2): counting them all is the
    conservative reading - a grant that fits it fits any narrower one AWS may apply."""
    tokens = _TOKENS.findall(expression or "")
    found: set[str] = set()
    for index, token in enumerate(tokens):
        if (
            token.startswith(":")
            or token.startswith("[")
            or not (token[0] == "#" or token[0].isalpha() or token[0] == "_")
        ):
            continue
        nested = bool(index) and tokens[index - 1] == "."
        if token[0] != "#" and not nested and (token.upper() in _KEYWORDS or tokens[index + 1 : index + 2] == ["("]):
            continue  # a clause keyword, an operator or a function
        found.add(names[token] if token[0] == "#" else token)
    return found


def _value(attribute: Mapping[str, Any]) -> str:
    (kind, value), *_ = attribute.items()
    return str(value) if kind in {"S", "N", "B"} else repr(value)


def _expression_names(request: Mapping[str, Any], *fields: str) -> set[str]:
    names = request.get("ExpressionAttributeNames", {})
    return set().union(*(named_attributes(request.get(field), names) for field in fields))


def _write_context(action: str, request: Mapping[str, Any], partition_key: str) -> Context:
    item = request.get("Item") or request["Key"]
    attributes = set(item) | _expression_names(request, "ConditionExpression")
    if action == "UpdateItem":
        attributes |= _expression_names(request, "UpdateExpression") | set(request.get("AttributeUpdates", {}))
    context = {"dynamodb:LeadingKeys": [_value(item[partition_key])], "dynamodb:Attributes": sorted(attributes)}
    if action != "ConditionCheckItem":
        context["dynamodb:ReturnValues"] = [request.get("ReturnValues", "NONE")]
    return context


def _read_keys_context(keys: Iterable[Mapping[str, Any]], request: Mapping[str, Any], partition_key: str) -> Context:
    keys = list(keys)
    attributes = set().union(*(set(key) for key in keys)) | _expression_names(request, "ProjectionExpression")
    attributes |= set(request.get("AttributesToGet", []))
    return {
        "dynamodb:LeadingKeys": sorted({_value(key[partition_key]) for key in keys}),
        "dynamodb:Attributes": sorted(attributes),
    }


def _query_context(operation: str, request: Mapping[str, Any], partition_key: str) -> Context:
    names = request.get("ExpressionAttributeNames", {})
    fields = ("KeyConditionExpression", "FilterExpression", "ProjectionExpression")
    attributes = _expression_names(request, *fields) | set(request.get("AttributesToGet", []))
    projected = "ProjectionExpression" in request or "AttributesToGet" in request
    default = (
        "SPECIFIC_ATTRIBUTES" if projected else "ALL_PROJECTED_ATTRIBUTES" if "IndexName" in request else ALL_ATTRIBUTES
    )
    context = {"dynamodb:Attributes": sorted(attributes), "dynamodb:Select": [request.get("Select", default)]}
    if operation == "Query":
        leading = re.findall(r"(#?\w+)\s*=\s*(:\w+)", request.get("KeyConditionExpression", ""))
        context["dynamodb:LeadingKeys"] = [
            _value(request["ExpressionAttributeValues"][placeholder])
            for name, placeholder in leading
            if names.get(name, name) == partition_key
        ]
    return context


def item_requests(
    operation: str, body: Mapping[str, Any], table_arn: Callable[[str], str], partition_key_of: PartitionKeyOf
) -> list[tuple[str, str, Context]]:
    """The (action, resource ARN, request context) of each part of a DynamoDB call AWS authorizes separately: one
    per item of a transaction, one per table of a batch, else the call itself."""
    parts: list[tuple[str, str, Context]] = []
    if operation in {"PutItem", "UpdateItem", "DeleteItem"}:
        parts.append(
            (
                operation,
                table_arn(body["TableName"]),
                _write_context(operation, body, partition_key_of(body["TableName"], None)),
            )
        )
    elif operation == "TransactWriteItems":
        for entry in body["TransactItems"]:
            for kind, request in entry.items():
                action = _ITEM_ACTIONS[kind]
                key = partition_key_of(request["TableName"], None)
                parts.append((action, table_arn(request["TableName"]), _write_context(action, request, key)))
    elif operation == "GetItem":
        key = partition_key_of(body["TableName"], None)
        parts.append((operation, table_arn(body["TableName"]), _read_keys_context([body["Key"]], body, key)))
    elif operation == "TransactGetItems":
        for entry in body["TransactItems"]:
            request = entry["Get"]
            key = partition_key_of(request["TableName"], None)
            parts.append(
                ("GetItem", table_arn(request["TableName"]), _read_keys_context([request["Key"]], request, key))
            )
    elif operation == "BatchGetItem":
        for table, request in body["RequestItems"].items():
            key = partition_key_of(table, None)
            parts.append((operation, table_arn(table), _read_keys_context(request["Keys"], request, key)))
    elif operation == "BatchWriteItem":
        for table, writes in body["RequestItems"].items():
            key = partition_key_of(table, None)
            items = [write.get("PutRequest", {}).get("Item") or write["DeleteRequest"]["Key"] for write in writes]
            parts.append(
                (
                    operation,
                    table_arn(table),
                    {
                        "dynamodb:LeadingKeys": sorted({_value(item[key]) for item in items}),
                        "dynamodb:Attributes": sorted(set().union(*(set(item) for item in items))),
                    },
                )
            )
    elif operation in {"Query", "Scan"}:
        index = body.get("IndexName")
        arn = table_arn(body["TableName"]) + (f"/index/{index}" if index else "")
        parts.append((operation, arn, _query_context(operation, body, partition_key_of(body["TableName"], index))))
    return parts


def iam_match(pattern: str, value: str, *, ignore_case: bool = False) -> re.Match[str] | None:
    """IAM's wildcards: ``*`` any run of characters, ``?`` exactly one, everything else literal (moto's own matcher
    turns the pattern into a regular expression as written: ``?`` is then a quantifier, ``.`` any character)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0)


def _listed(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def _operator_holds(operator: str, values: list[str] | None, allowed: list[str]) -> bool:
    qualifier, _, test = operator.rpartition(":")
    if_exists = test.endswith("IfExists")
    test = test.removesuffix("IfExists")
    if test == "StringEquals":

        def matches(value: str) -> bool:
            return value in allowed
    elif test == "StringLike":

        def matches(value: str) -> bool:
            return any(iam_match(pattern, value) for pattern in allowed)
    else:
        raise UnknownConditionError(operator)
    if qualifier == "ForAllValues":
        return all(matches(value) for value in values or [])
    if qualifier == "ForAnyValue":
        return any(matches(value) for value in values or [])
    if qualifier:
        raise UnknownConditionError(operator)
    if values is None:
        return if_exists
    return all(matches(value) for value in values)


def conditions_hold(condition: Mapping[str, Mapping[str, Any]], context: Context) -> bool:
    """Whether a statement's ``Condition`` block is true for a DynamoDB request's context."""
    for operator, keys in condition.items():
        for key, allowed in keys.items():
            if key not in _KEYS:
                raise UnknownConditionError(f"{operator} {key}")
            if not _operator_holds(operator, context.get(key), [str(value) for value in _listed(allowed)]):
                return False
    return True


def granting(statements: Iterable[Mapping[str, Any]], action: str, arn: str) -> Iterator[Mapping[str, Any]]:
    """The ``Allow`` statements whose actions and resources cover ``dynamodb:<action>`` on ``arn``."""
    for statement in statements:
        actions, resources = _listed(statement["Action"]), _listed(statement["Resource"])
        if (
            statement["Effect"] == "Allow"
            and any(iam_match(pattern, f"dynamodb:{action}", ignore_case=True) for pattern in actions)
            and any(iam_match(pattern, arn) for pattern in resources)
        ):
            yield statement


def allowed_by_conditions(statements: Iterable[Mapping[str, Any]], action: str, arn: str, context: Context) -> bool:
    """Whether some statement granting the action on the resource has all its conditions true for the request (a
    statement with none allows it)."""
    return any(
        conditions_hold(statement.get("Condition", {}), context) for statement in granting(statements, action, arn)
    )

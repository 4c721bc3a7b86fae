// What graphql-js, the reference GraphQL implementation, would execute for
// GraphQL-over-HTTP request bodies: one JSON document a line on stdin (an
// object, or a batch array), one answer a line on stdout:
//   {"ok": true, "fields": [[name, args], ...]}  the root fields executed, with
//                                                their coerced arguments
//   {"ok": false, "error": "..."}                refused (parse, validation,
//                                                variables, operation choice)
//   {"ok": false, "schema": true, "error": "..."} refused only for what the
//                                                provider's own schema says
// The schema names the root fields tests/classifier.rs generates, with
// String and JSON arguments, so that what is compared is how a document is
// read, not how values are typed. The rules of the specification that need
// the provider's own schema (which fields, arguments and types exist, which
// selections are leaves, which values a type takes) are reported apart: the
// broker reads Railway's schema only to type nested fields, and a request
// that breaks one of them is refused by the provider whole, so it runs
// nothing. The nested fields generated are Railway's own, so that the broker
// allows them.
import * as graphql from 'graphql';
import readline from 'node:readline';

const { buildSchema, execute, parse, specifiedRules, validate } = graphql;
const schemaShapeRules = new Set(
  [
    'FieldsOnCorrectTypeRule',
    'KnownArgumentNamesRule',
    'KnownTypeNamesRule',
    'ProvidedRequiredArgumentsRule',
    'ScalarLeafsRule',
    'ValuesOfCorrectTypeRule',
    'VariablesInAllowedPositionRule',
  ].map((name) => graphql[name]),
);
const structureRules = specifiedRules.filter((rule) => !schemaShapeRules.has(rule));

const schema = buildSchema(`
  scalar JSON
  type Query {
    me: User
    project(id: String): Node
    environment(id: String, projectId: String): Node
    service(id: String): Node
    variables(projectId: String, environmentId: String, serviceId: String): JSON
    deployments(input: JSON, first: Int): Connection
  }
  type Mutation {
    variableUpsert(input: JSON): Boolean
    serviceInstanceRedeploy(serviceId: String, environmentId: String): Boolean
    deploymentRestart(id: String): Boolean
    volumeDelete(volumeId: String): Boolean
  }
  type User { id: String name: String email: String }
  type Node { id: String name: String serviceInstances: Connection }
  type Connection { edges: [Edge] }
  type Edge { node: Node }
`);

function run(request) {
  if (typeof request !== 'object' || request === null || Array.isArray(request)) {
    return { ok: false, error: 'a request is an object' };
  }
  if (typeof request.query !== 'string') return { ok: false, error: 'no query' };
  let document;
  try {
    document = parse(request.query);
  } catch (e) {
    return { ok: false, error: `parse: ${e.message}` };
  }
  const errors = validate(schema, document, structureRules);
  if (errors.length > 0) return { ok: false, error: `validate: ${errors[0].message}` };
  const shape = validate(schema, document, [...schemaShapeRules]);
  if (shape.length > 0) return { ok: false, schema: true, error: `schema: ${shape[0].message}` };
  const fields = [];
  const rootValue = new Proxy({}, {
    get: (_, name) => (args, _context, info) => {
      fields.push([info.fieldName, args]);
      const named = info.returnType.name ?? info.returnType.ofType?.name;
      return named === 'Node' || named === 'User' ? {} : null;
    },
  });
  let result;
  try {
    result = execute({
      schema,
      document,
      rootValue,
      variableValues: request.variables ?? undefined,
      operationName: request.operationName ?? undefined,
    });
  } catch (e) {
    return { ok: false, error: `execute: ${e.message}` };
  }
  if (result.errors && result.errors.length > 0) {
    return { ok: false, error: `execute: ${result.errors[0].message}` };
  }
  return { ok: true, fields };
}

function answer(body) {
  if (!Array.isArray(body)) return run(body);
  const fields = [];
  for (const request of body) {
    const one = run(request);
    if (!one.ok) return one;
    fields.push(...one.fields);
  }
  return { ok: true, fields };
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  let out;
  try {
    out = answer(JSON.parse(line));
  } catch (e) {
    out = { ok: false, error: `not JSON: ${e.message}` };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

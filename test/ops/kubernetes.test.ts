/**
 * deploy/kubernetes/ agrees with the code: the env names are ones src/ops/config.ts reads and accepts,
 * the ports and the probes' health service are the plugin's, the memory limit is above the bound the
 * settings give (docs/operations.md "Memory"), the grace period outlasts the drain, the autoscaler's
 * metric is one the plugin exports, and the balancer reaches the pods' Service on the gRPC port with
 * per-call balancing. `kubectl kustomize` renders the folder where kubectl exists (offline).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';

import { parse, parseAllDocuments } from 'yaml';

import { DEFAULT_MAX_CONNECTIONS } from '../../src/grpc/admission';
import { MAX_HEADER_BYTES_PER_CONNECTION } from '../../src/grpc/connection-table';
import { SERVICE_NAME } from '../../src/grpc/server';
import { type Config, defaultSandboxProcesses, loadConfig, MAX_SCRIPT_BYTES_CEILING } from '../../src/ops/config';
import { Metrics } from '../../src/ops/metrics';
import { defaultSandboxMemoryMb, threadSplit } from '../../src/sandboxes/supervisor';

const DIR = path.join(__dirname, '..', '..', '..', 'deploy', 'kubernetes');
/** Node.js, gRPC and the code of the front (docs/operations.md "Memory"). */
const FRONT_BASE_MB = 100;
const MIB = 1024 * 1024;

// biome-ignore lint/suspicious/noExplicitAny: manifests are checked field by field below
type Manifest = Record<string, any>;

function readManifests(): Manifest[] {
  const kustomization = parse(readFileSync(path.join(DIR, 'kustomization.yaml'), 'utf8')) as { resources: string[] };
  return kustomization.resources.flatMap((file) =>
    parseAllDocuments(readFileSync(path.join(DIR, file), 'utf8')).map((doc) => {
      assert.deepEqual(doc.errors, [], `${file} does not parse`);
      return doc.toJS() as Manifest;
    }),
  );
}

const manifests = readManifests();
const find = (kind: string, name: string): Manifest => {
  const found = manifests.find((m) => m['kind'] === kind && m['metadata']?.['name'] === name);
  assert.ok(found, `${kind} ${name} is in deploy/kubernetes`);
  return found;
};
const deployment = find('Deployment', 'qlik-sse-js');
const pod = deployment['spec']['template']['spec'];
const plugin = pod['containers'].find((c: Manifest) => c['name'] === 'plugin') as Manifest;
const env: Record<string, string> = Object.fromEntries(plugin['env'].map((e: Manifest) => [e['name'], String(e['value'])]));

/** The config the plugin builds from the manifest's env, and the names it read to build it. */
function configOf(variables: Record<string, string>): { config: Config; read: Set<string> } {
  const read = new Set<string>();
  const watched = new Proxy(variables, {
    get(target, name) {
      if (typeof name === 'string') read.add(name);
      return Reflect.get(target, name);
    },
  });
  return { config: loadConfig(watched), read };
}

const { config, read } = configOf(env);
const containerPort = (name: string): number => plugin['ports'].find((p: Manifest) => p['name'] === name)['containerPort'];

function mebibytes(quantity: string): number {
  const match = /^(\d+)(Mi|Gi)$/.exec(quantity);
  assert.ok(match, `memory quantity ${quantity} in Mi or Gi`);
  return Number(match[1]) * (match[2] === 'Gi' ? 1024 : 1);
}

describe('deploy/kubernetes agrees with the code', () => {
  test('every env name is one the plugin reads, and every value is accepted', () => {
    for (const name of Object.keys(env)) assert.ok(read.has(name), `${name} is not read by src/ops/config.ts`);
    assert.equal(config.host, '0.0.0.0');
  });

  test("the container's ports are the plugin's gRPC and metrics ports", () => {
    assert.equal(containerPort('grpc'), config.port);
    assert.equal(containerPort('metrics'), config.metricsPort);
    assert.equal(config.metricsHost, '0.0.0.0');
  });

  test("native gRPC probes ask the plugin's health service on its port", () => {
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      assert.deepEqual(plugin[probe]['grpc'], { port: config.port, service: SERVICE_NAME }, probe);
    }
  });

  test('the memory limit is above the bound the settings give, and requested in full', () => {
    const split = threadSplit(config.workers, config.sandboxProcesses);
    // Each spare has as many threads as the largest process, and its fence.
    const fencesMb = [...split, ...Array.from({ length: config.spareSandboxes }, () => Math.max(...split))]
      .map((threads) => config.sandboxMemoryMb ?? defaultSandboxMemoryMb(threads, config.memoryLimitMb, config.fastPathMs))
      .reduce((a, b) => a + b, 0);
    const headersMb = ((config.maxConnections ?? DEFAULT_MAX_CONNECTIONS) * MAX_HEADER_BYTES_PER_CONNECTION) / 1e6;
    const boundMb = FRONT_BASE_MB + config.maxHeldMb + headersMb + fencesMb;
    const limitMib = mebibytes(plugin['resources']['limits']['memory']);
    assert.ok((limitMib * MIB) / 1e6 > boundMb, `limit ${limitMib} Mi is not above the bound ${boundMb} MB`);
    assert.equal(plugin['resources']['requests']['memory'], plugin['resources']['limits']['memory']);
    assert.equal(config.sandboxProcesses, defaultSandboxProcesses(config.workers));
    assert.equal(Number(plugin['resources']['requests']['cpu']), config.workers);
  });

  test('a stopping pod drains within the grace period', () => {
    const [sleep, seconds] = plugin['lifecycle']['preStop']['exec']['command'];
    assert.equal(sleep, 'sleep');
    const needMs = Number(seconds) * 1000 + config.shutdownGraceMs + config.scriptTimeoutMs;
    assert.ok(pod['terminationGracePeriodSeconds'] * 1000 > needMs, `grace ${pod['terminationGracePeriodSeconds']} s, drain ${needMs} ms`);
  });

  test('the pods run unprivileged, read-only, with no capability and the default seccomp profile', () => {
    for (const manifest of [deployment, find('Deployment', 'qlik-sse-js-balancer')]) {
      const spec = manifest['spec']['template']['spec'];
      assert.equal(spec['securityContext']['runAsNonRoot'], true);
      assert.ok(spec['securityContext']['runAsUser'] > 0);
      assert.deepEqual(spec['securityContext']['seccompProfile'], { type: 'RuntimeDefault' });
      assert.equal(spec['automountServiceAccountToken'], false);
      for (const container of spec['containers']) {
        assert.equal(container['securityContext']['allowPrivilegeEscalation'], false);
        assert.equal(container['securityContext']['readOnlyRootFilesystem'], true);
        assert.deepEqual(container['securityContext']['capabilities'], { drop: ['ALL'] });
      }
    }
  });

  test('the Services, the disruption budget and the network policy select the plugin pods', () => {
    const labels = deployment['spec']['template']['metadata']['labels'];
    assert.deepEqual(deployment['spec']['selector']['matchLabels'], labels);
    const pods = find('Service', 'qlik-sse-js-pods');
    assert.equal(pods['spec']['clusterIP'], 'None');
    assert.deepEqual(pods['spec']['selector'], labels);
    assert.deepEqual(
      pods['spec']['ports'].map((p: Manifest) => [p['port'], p['targetPort']]),
      [
        [config.port, 'grpc'],
        [config.metricsPort, 'metrics'],
      ],
    );
    assert.deepEqual(find('PodDisruptionBudget', 'qlik-sse-js')['spec']['selector']['matchLabels'], labels);
    const policy = find('NetworkPolicy', 'qlik-sse-js');
    assert.deepEqual(policy['spec']['podSelector']['matchLabels'], labels);
    assert.deepEqual(policy['spec']['egress'], []);
    assert.deepEqual(
      policy['spec']['ingress'].map((rule: Manifest) => rule['ports'][0]['port']),
      [config.port, config.metricsPort],
    );
  });

  test('the autoscaler scales the Deployment on a metric the plugin exports', async () => {
    const hpa = find('HorizontalPodAutoscaler', 'qlik-sse-js');
    assert.equal(hpa['spec']['scaleTargetRef']['name'], 'qlik-sse-js');
    const metric = hpa['spec']['metrics'][0]['pods']['metric']['name'];
    const exported = (
      await new Metrics({
        queueSize: 0,
        busyWorkers: 0,
        threads: 1,
        residentBytes: () => [],
        retirements: 0,
        processes: () => [],
        spareProcesses: () => [],
      }).registry.getMetricsAsJSON()
    ).map((m) => m.name);
    assert.ok(exported.includes(metric), `${metric} is not among ${exported.join(', ')}`);
  });

  test('the balancer sends each call to the pods Service on the gRPC port, least-request, over HTTP/2', () => {
    const envoy = parse(readFileSync(path.join(DIR, 'envoy.yaml'), 'utf8')) as Manifest;
    const [cluster] = envoy['static_resources']['clusters'];
    assert.equal(cluster['lb_policy'], 'LEAST_REQUEST');
    assert.equal(cluster['type'], 'STRICT_DNS');
    const protocol = cluster['typed_extension_protocol_options']['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'];
    assert.ok(protocol['explicit_http_config']['http2_protocol_options']);
    const address = cluster['load_assignment']['endpoints'][0]['lb_endpoints'][0]['endpoint']['address']['socket_address'];
    assert.deepEqual(address, { address: 'qlik-sse-js-pods', port_value: config.port });
    assert.equal(cluster['health_checks'][0]['grpc_health_check']['service_name'], SERVICE_NAME);
    const [listener] = envoy['static_resources']['listeners'];
    const [chain] = listener['filter_chains'];
    assert.equal(chain['transport_socket']['typed_config']['require_client_certificate'], true);
    const manager = chain['filters'][0]['typed_config'];
    // The largest script the plugin accepts travels base64-coded in one header.
    assert.ok(manager['max_request_headers_kb'] * 1024 > Math.ceil(MAX_SCRIPT_BYTES_CEILING / 3) * 4);
    const balancer = find('Deployment', 'qlik-sse-js-balancer')['spec']['template']['spec'];
    const mounts = balancer['containers'][0]['volumeMounts'].map((m: Manifest) => m['mountPath']);
    const files = JSON.stringify(chain['transport_socket']).match(/"filename":"[^"]+"/g) ?? [];
    for (const file of files)
      assert.ok(
        mounts.some((dir: string) => file.includes(`${dir}/`)),
        `${file} is mounted`,
      );
    assert.equal(find('Service', 'qlik-sse-js')['spec']['ports'][0]['port'], config.port);
  });

  const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  test('kubectl kustomize renders the folder', { skip: kubectl.status !== 0 && 'kubectl is not installed' }, () => {
    const rendered = spawnSync('kubectl', ['kustomize', DIR], { encoding: 'utf8' });
    assert.equal(rendered.status, 0, rendered.stderr);
    const kinds = parseAllDocuments(rendered.stdout)
      .map((doc) => doc.toJS() as Manifest)
      .map((m) => `${m['kind']}/${m['metadata']['name'].replace(/-[a-z0-9]{10}$/, '')}`)
      .sort();
    assert.deepEqual(kinds, [
      'ConfigMap/qlik-sse-js-envoy',
      'Deployment/qlik-sse-js',
      'Deployment/qlik-sse-js-balancer',
      'HorizontalPodAutoscaler/qlik-sse-js',
      'NetworkPolicy/qlik-sse-js',
      'PodDisruptionBudget/qlik-sse-js',
      'PodDisruptionBudget/qlik-sse-js-balancer',
      'Service/qlik-sse-js',
      'Service/qlik-sse-js-pods',
    ]);
  });
});

// A second OpenTelemetry SDK (JavaScript) for tests/interop: a reload span following reloadtrace's
// reload span convention, then a request span served by the version it set, sent over OTLP/HTTP
// (protobuf) to OTLP_TRACES_URL. Prints the ids and times it used as one JSON line.
//
// Environment: OTLP_TRACES_URL (http://127.0.0.1:PORT/v1/traces), SERVICE_NAME, SERVICE_INSTANCE_ID,
// BASE_TIME_UNIX_NANO (decimal string: JavaScript numbers cannot hold nanoseconds since the epoch).
'use strict';

const { SpanKind, SpanStatusCode, context, trace } = require('@opentelemetry/api');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { TracerProvider, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');

function hrTime(unixNano) {
  const nanos = BigInt(unixNano);
  return [Number(nanos / 1000000000n), Number(nanos % 1000000000n)];
}

async function main() {
  const base = BigInt(process.env.BASE_TIME_UNIX_NANO);
  const exporter = new OTLPTraceExporter({ url: process.env.OTLP_TRACES_URL });
  const provider = new TracerProvider({
    resource: resourceFromAttributes({
      'service.name': process.env.SERVICE_NAME,
      'service.instance.id': process.env.SERVICE_INSTANCE_ID,
      'deployment.environment.name': 'test',
    }),
    spanProcessors: [new SimpleSpanProcessor({ exporter })],
  });
  const tracer = provider.getTracer('node-gateway', '9.8.7');

  const requested = base;
  const effective = base + 20000000n; // the new model serves 20 ms after the request to reload
  const reload = tracer.startSpan('reload model', {
    kind: SpanKind.INTERNAL,
    startTime: hrTime(requested),
    attributes: {
      'reload.id': 'node-reload-1',
      'reload.component': 'model',
      'reload.old_version': 'm-node-1',
      'reload.new_version': 'm-node-2',
      'reload.status': 'SUCCEEDED',
      'reload.source': 'node-deploy',
      'reload.scope': 'service',
      'reload.changed_keys': ['model.id', 'parameters.temperature'],
      'reload.model_context.model.id': 'gpt-node',
      'reload.model_context.model.parameters.temperature': '0.3',
      'reload.effective_time_unix_nano': effective.toString(),
    },
  });
  reload.setStatus({ code: SpanStatusCode.OK });
  reload.end(hrTime(effective + 1000000n)); // the span ends 1 ms after the swap: the attribute says when

  const start = base + 50000000n;
  const request = tracer.startSpan('POST /v1/chat', {
    kind: SpanKind.SERVER,
    startTime: hrTime(start),
    attributes: { 'http.route': '/v1/chat', 'http.response.status_code': 200, 'gen_ai.request.temperature': 0.3 },
    links: [{ context: reload.spanContext(), attributes: { 'link.reason': 'served-by' } }],
  });
  request.addEvent('first.token', { 'tokens': 1 }, hrTime(start + 5000000n));
  const child = tracer.startSpan('chat gpt-node', { kind: SpanKind.CLIENT, startTime: hrTime(start + 1000000n) },
    trace.setSpan(context.active(), request));
  child.end(hrTime(start + 30000000n));
  request.setStatus({ code: SpanStatusCode.OK });
  request.end(hrTime(start + 40000000n));

  await provider.forceFlush();
  await provider.shutdown();
  const ids = (span) => ({ trace_id: span.spanContext().traceId, span_id: span.spanContext().spanId });
  console.log(JSON.stringify({
    reload: { ...ids(reload), requested: requested.toString(), effective: effective.toString() },
    request: { ...ids(request), start: start.toString(), end: (start + 40000000n).toString() },
    child: ids(child),
  }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

-- reload_annotations, anomaly_annotations: Grafana annotations (columns time, timeEnd, title, text,
-- tags) for every reload attempt and every anomaly, exact where Grafana's change-detection preset
-- can only guess from service.version in 30 s buckets. Views, re-created on every schema apply.
-- Paste: SELECT time, timeEnd, title, text, tags FROM reload_annotations WHERE $__timeFilter(time)
-- (docs/grafana.md; the other columns are there to filter on: service_name, component, status, ...).
--
-- reload_annotations: one row per reload_id (reload_events FINAL). time = requested_time, timeEnd =
-- effective_time (a region as long as the reload took; its right edge is when the new version
-- started serving, or when a FAILED attempt was given up). tags: service:<name>, component:<name>,
-- version:<old> → <new> (old '(none)' when unknown), status:<SUCCEEDED|FAILED>, canary:<instance>
-- for an instance-scoped reload, and anomaly:<SEVERITY> <metric> per anomaly blamed on it
-- (anomalies FINAL: the strongest verdict per anomaly_id, highest severity first).
CREATE OR REPLACE VIEW reload_annotations AS
SELECT
    r.requested_time AS time,
    r.effective_time AS timeEnd,
    concat(r.service_name, ' ', r.component, ' reload ', r.status,
           if(empty(a.verdicts), '', concat(' (', a.verdicts[1], ')'))) AS title,
    concat(r.component, ' ', ifNull(r.old_version, '(none)'), ' → ', r.new_version, ', ', r.status,
           ' after ', toString(round(r.reload_duration_ms, 3)), ' ms',
           if(isNull(r.service_instance_id), ', every instance', concat(', canary ', assumeNotNull(r.service_instance_id))),
           ', source ', r.source, ', reload ', r.reload_id,
           if(empty(a.verdicts), '', concat('. Anomalies: ', arrayStringConcat(a.details, '; ')))) AS text,
    arrayConcat(
        [concat('service:', r.service_name), concat('component:', r.component),
         concat('version:', ifNull(r.old_version, '(none)'), ' → ', r.new_version), concat('status:', r.status)],
        if(isNull(r.service_instance_id), [], [concat('canary:', assumeNotNull(r.service_instance_id))]),
        arrayMap(verdict -> concat('anomaly:', verdict), a.verdicts)) AS tags,
    r.reload_id AS reload_id,
    r.service_name AS service_name,
    r.service_instance_id AS service_instance_id,
    r.component AS component,
    r.old_version AS old_version,
    r.new_version AS new_version,
    r.status AS status,
    a.verdicts AS anomalies
FROM reload_events AS r FINAL
LEFT JOIN
(
    SELECT
        reload_id,
        arrayMap(x -> x.2, arraySort(x -> x.1, groupArray((-toInt32(severity_rank), concat(severity, ' ', metric), anomaly_id)))) AS verdicts,
        arrayMap(x -> x.2, arraySort(x -> x.1, groupArray((-toInt32(severity_rank),
            concat(severity, ' ', metric, ' ', toString(round(baseline_value, 3)), ' → ', toString(round(observed_value, 3)),
                   ' (p = ', toString(p_value), ', ', toString(baseline_count), ' vs ', toString(observed_count), ')'),
            anomaly_id)))) AS details
    FROM anomalies FINAL
    GROUP BY reload_id
) AS a ON a.reload_id = r.reload_id;

-- anomaly_annotations: one row per anomaly_id (anomalies FINAL, the strongest verdict). time = the
-- effective time of its reload (detected_time when the reload is not in reload_events yet), timeEnd =
-- detected_time: the region is the time it took to detect. tags: service, component, version as
-- above, severity:<SEVERITY>, metric:<metric>.
CREATE OR REPLACE VIEW anomaly_annotations AS
SELECT
    ifNull(r.effective_time, a.detected_time) AS time,
    a.detected_time AS timeEnd,
    concat(a.severity, ' ', a.metric, ' anomaly: ', a.service_name, ' ', a.component, ' ',
           ifNull(a.old_version, '(none)'), ' → ', a.new_version) AS title,
    concat(a.metric, ' ', toString(round(a.baseline_value, 3)), ' → ', toString(round(a.observed_value, 3)),
           ' (p = ', toString(a.p_value), ', ', toString(a.baseline_count), ' baseline vs ',
           toString(a.observed_count), ' observed), detected ',
           if(isNull(r.effective_time), 'before its reload was stored',
              concat(toString(round((toUnixTimestamp64Nano(a.detected_time) - toUnixTimestamp64Nano(assumeNotNull(r.effective_time))) / 1e6, 3)),
                     ' ms after the reload')),
           ', reload ', a.reload_id, ', anomaly ', a.anomaly_id) AS text,
    [concat('service:', a.service_name), concat('component:', a.component),
     concat('version:', ifNull(a.old_version, '(none)'), ' → ', a.new_version),
     concat('severity:', a.severity), concat('metric:', a.metric)] AS tags,
    a.anomaly_id AS anomaly_id,
    a.reload_id AS reload_id,
    a.service_name AS service_name,
    a.component AS component,
    a.metric AS metric,
    a.severity AS severity
FROM anomalies AS a FINAL
LEFT JOIN
(
    SELECT reload_id, toNullable(effective_time) AS effective_time FROM reload_events FINAL
) AS r ON r.reload_id = a.reload_id;

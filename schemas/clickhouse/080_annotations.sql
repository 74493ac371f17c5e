-- reload_annotations, anomaly_annotations: Grafana annotations (columns time, timeEnd, title, text,
-- tags) for every reload attempt and every anomaly, exact where Grafana's change-detection preset
-- can only guess from service.version in 30 s buckets. Views, re-created on every schema apply.
-- Paste: SELECT time, timeEnd, title, text, tags FROM reload_annotations WHERE $__timeFilter(time)
-- (docs/grafana.md; the other columns are there to filter on: service_name, component, status, ...).
-- Columns unqualified, no table aliases: a view's tables are stored qualified with the database,
-- and an alias equal to the database's name would shadow it (the joined subqueries' aliases are
-- long for that reason). No SETTINGS either: a readonly = 1 user's queries ignore them.
--
-- reload_annotations: one row per reload_id (reload_events FINAL). time = requested_time, timeEnd =
-- effective_time (a region as long as the reload took; its right edge is when the new version
-- started serving, or when a FAILED attempt was given up). tags: service:<name>, component:<name>,
-- version:<old> → <new> (old '(none)' when unknown), status:<SUCCEEDED|FAILED>, canary:<instance>
-- for an instance-scoped reload, and anomaly:<SEVERITY> <metric> per anomaly blamed on it
-- (anomalies FINAL: the strongest verdict per anomaly_id, highest severity first).
CREATE OR REPLACE VIEW reload_annotations AS
SELECT
    requested_time AS time,
    effective_time AS timeEnd,
    concat(service_name, ' ', component, ' reload ', status,
           if(empty(verdicts), '', concat(' (', verdicts[1], ')'))) AS title,
    concat(component, ' ', ifNull(old_version, '(none)'), ' → ', new_version, ', ', status,
           ' after ', toString(round(reload_duration_ms, 3)), ' ms',
           if(isNull(service_instance_id), ', every instance', concat(', canary ', assumeNotNull(service_instance_id))),
           ', source ', source, ', reload ', reload_id,
           if(empty(verdicts), '', concat('. Anomalies: ', arrayStringConcat(details, '; ')))) AS text,
    arrayConcat(
        [concat('service:', service_name), concat('component:', component),
         concat('version:', ifNull(old_version, '(none)'), ' → ', new_version), concat('status:', status)],
        if(isNull(service_instance_id), [], [concat('canary:', assumeNotNull(service_instance_id))]),
        arrayMap(verdict -> concat('anomaly:', verdict), verdicts)) AS tags,
    reload_id,
    service_name,
    service_instance_id,
    component,
    old_version,
    new_version,
    status,
    verdicts AS anomalies
FROM reload_events FINAL
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
) AS anomalies_blamed_on_reloads USING (reload_id);

-- anomaly_annotations: one row per anomaly_id (anomalies FINAL, the strongest verdict). time = the
-- effective time of its reload (detected_time when the reload is not in reload_events yet), timeEnd =
-- detected_time: the region is the time it took to detect. tags: service, component, version as
-- above, severity:<SEVERITY>, metric:<metric>.
CREATE OR REPLACE VIEW anomaly_annotations AS
SELECT
    ifNull(reload_effective_time, detected_time) AS time,
    detected_time AS timeEnd,
    concat(severity, ' ', metric, ' anomaly: ', service_name, ' ', component, ' ',
           ifNull(old_version, '(none)'), ' → ', new_version) AS title,
    concat(metric, ' ', toString(round(baseline_value, 3)), ' → ', toString(round(observed_value, 3)),
           ' (p = ', toString(p_value), ', ', toString(baseline_count), ' baseline vs ',
           toString(observed_count), ' observed), detected ',
           if(isNull(reload_effective_time), 'before its reload was stored',
              concat(toString(round((toUnixTimestamp64Nano(detected_time) - toUnixTimestamp64Nano(assumeNotNull(reload_effective_time))) / 1e6, 3)),
                     ' ms after the reload')),
           ', reload ', reload_id, ', anomaly ', anomaly_id) AS text,
    [concat('service:', service_name), concat('component:', component),
     concat('version:', ifNull(old_version, '(none)'), ' → ', new_version),
     concat('severity:', severity), concat('metric:', metric)] AS tags,
    anomaly_id,
    reload_id,
    service_name,
    component,
    metric,
    severity
FROM anomalies FINAL
LEFT JOIN
(
    SELECT reload_id, toNullable(effective_time) AS reload_effective_time FROM reload_events FINAL
) AS effective_times_of_reloads USING (reload_id);

using System.Globalization;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Patterns.Etl;

/// <summary>
/// Reports the jobs <c>AddEtl</c> registered: unhealthy while any job stopped after failing on an outage for longer than
/// its <see cref="EtlJobOptions.MaxOutageDuration"/>, degraded while any job's runs fail on an outage no message caused
/// (a dimension that is down), healthy otherwise. Each job's state is in the result's data.
/// </summary>
/// <remarks>
/// Registered by <c>AddEtl</c>; add it to the health checks with
/// <c>services.AddHealthChecks().AddCheck&lt;EtlJobsHealthCheck&gt;("patterns-etl")</c>.
/// </remarks>
public sealed class EtlJobsHealthCheck : IHealthCheck
{
    private readonly EtlJobs _jobs;

    internal EtlJobsHealthCheck(EtlJobs jobs) => _jobs = jobs;

    /// <inheritdoc />
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var jobs = _jobs.GetJobHealth();
        var data = new Dictionary<string, object>(jobs.Count, StringComparer.Ordinal);
        List<string>? stopped = null;
        List<string>? failing = null;
        foreach (var (job, health) in jobs)
        {
            if (health.Stopped)
            {
                // The error says which job stopped, since when, the limit and the outage's last error.
                var line = health.Error?.Message ?? $"ETL job '{job}' stopped";
                (stopped ??= []).Add(line);
                data[job] = $"Unhealthy: {line}";
            }
            else if (health.OutageSince is { } since)
            {
                var line = $"ETL job '{job}' failing on an outage no message caused since {since.ToString("o", CultureInfo.InvariantCulture)}: {health.Error?.GetType().Name}: {health.Error?.Message}";
                (failing ??= []).Add(line);
                data[job] = $"Degraded: {line}";
            }
            else
            {
                data[job] = "Healthy";
            }
        }

        return Task.FromResult(
            stopped is not null ? HealthCheckResult.Unhealthy(string.Join("; ", stopped.Concat(failing ?? [])), data: data)
            : failing is not null ? HealthCheckResult.Degraded(string.Join("; ", failing), data: data)
            : HealthCheckResult.Healthy($"{jobs.Count} ETL job(s), none failing on an outage", data));
    }
}

/// <summary>
/// An <c>AddEtl</c> job's runs failed on an outage no message caused for longer than its
/// <see cref="EtlJobOptions.MaxOutageDuration"/>: the job stopped. A queue job's messages stay on the queue; another
/// job's next run reads its source again from the last committed bookmark.
/// </summary>
public sealed class EtlOutageLimitExceededException : Exception
{
    /// <summary>Initializes a new instance of the <see cref="EtlOutageLimitExceededException"/> class.</summary>
    public EtlOutageLimitExceededException()
    {
    }

    /// <summary>Initializes a new instance of the <see cref="EtlOutageLimitExceededException"/> class.</summary>
    /// <param name="message">What happened.</param>
    public EtlOutageLimitExceededException(string message)
        : base(message)
    {
    }

    /// <summary>Initializes a new instance of the <see cref="EtlOutageLimitExceededException"/> class.</summary>
    /// <param name="message">What happened.</param>
    /// <param name="innerException">The outage's last error.</param>
    public EtlOutageLimitExceededException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Gets the job.</summary>
    public string? Job { get; init; }

    /// <summary>Gets when the first of the runs that failed on the outage failed.</summary>
    public DateTimeOffset Since { get; init; }
}

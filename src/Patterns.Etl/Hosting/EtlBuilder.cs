using Cronos;
using Microsoft.Extensions.DependencyInjection;

namespace Patterns.Etl;

/// <summary>Registers ETL jobs on the host: each runs on demand (<see cref="IEtlJobs"/>), on an interval, on a cron schedule, or once from the command line.</summary>
public sealed class EtlBuilder
{
    private readonly List<EtlJobRegistration> _jobs;

    internal EtlBuilder(IServiceCollection services, List<EtlJobRegistration> jobs)
    {
        Services = services;
        _jobs = jobs;
    }

    /// <summary>Gets the services, for plug-ins that chain on the builder.</summary>
    public IServiceCollection Services { get; }

    /// <summary>Adds a job.</summary>
    /// <param name="name">The job's name (unique): also the pipeline's bookmark name when the pipeline was not given one.</param>
    /// <param name="pipeline">Builds the pipeline from the host's services; called for each run.</param>
    /// <param name="configure">Sets the schedule and the run options.</param>
    /// <returns>This builder.</returns>
    /// <exception cref="ArgumentException">The name is taken, or the schedule is invalid (the message says why).</exception>
    public EtlBuilder AddJob(string name, Func<IServiceProvider, EtlPipeline> pipeline, Action<EtlJobOptions>? configure = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(pipeline);
        if (_jobs.Any(j => string.Equals(j.Name, name, StringComparison.Ordinal)))
        {
            throw new ArgumentException($"An ETL job named '{name}' is already registered.", nameof(name));
        }

        var options = new EtlJobOptions();
        configure?.Invoke(options);
        var errors = new List<string>();
        CronExpression? cron = null;
        if (options.Interval is { } interval && interval <= TimeSpan.Zero)
        {
            errors.Add($"ETL job '{name}': Interval must be positive (was {interval}).");
        }

        if (options.Interval is not null && options.Cron is not null)
        {
            errors.Add($"ETL job '{name}': set Interval or Cron, not both.");
        }

        if (options.Cron is { } expression)
        {
            try
            {
                cron = CronExpression.Parse(expression, expression.Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries).Length == 6 ? CronFormat.IncludeSeconds : CronFormat.Standard);
            }
            catch (CronFormatException ex)
            {
                errors.Add($"ETL job '{name}': Cron '{expression}' is not a cron expression: {ex.Message}");
            }
        }

        if (options.MaxOutageDuration is { } outage && outage <= TimeSpan.Zero)
        {
            errors.Add($"ETL job '{name}': MaxOutageDuration must be positive (was {outage}).");
        }

        errors.AddRange(options.RunOptions.Validate().Select(e => $"ETL job '{name}': {e}"));
        if (errors.Count > 0)
        {
            throw new ArgumentException(string.Join(Environment.NewLine, errors), nameof(configure));
        }

        _jobs.Add(new EtlJobRegistration(name, pipeline, options, cron));
        return this;
    }
}

/// <summary>When a job runs, and with which options.</summary>
public sealed class EtlJobOptions
{
    /// <summary>Gets or sets the time between the end of one run and the start of the next.</summary>
    /// <value>Default <see langword="null"/>: not on an interval.</value>
    public TimeSpan? Interval { get; set; }

    /// <summary>Gets or sets a cron expression (five fields, or six with seconds) for when the job runs.</summary>
    /// <value>Default <see langword="null"/>: not on a schedule.</value>
    public string? Cron { get; set; }

    /// <summary>Gets or sets the time zone of <see cref="Cron"/>.</summary>
    /// <value>Default UTC.</value>
    public TimeZoneInfo TimeZone { get; set; } = TimeZoneInfo.Utc;

    /// <summary>Gets or sets a value indicating whether a scheduled job also runs once when the host starts.</summary>
    /// <value>Default <see langword="false"/>.</value>
    public bool RunOnStart { get; set; }

    /// <summary>
    /// Gets or sets how long the job's runs may keep failing on an outage no message caused (a <c>Lookup</c>'s dimension
    /// or a join's build side that cannot be read, a stage past its memory budget) before the job stops. Such a failure
    /// blames no message: a queue's or subscription's messages stay on the queue (none counts a delivery or is
    /// dead-lettered), another source is read again from the last committed bookmark, and the next run tries again, so
    /// an outage that never ends would hold the queue (or the load) for ever. Each such run is logged once, as a warning. Once the first of an unbroken series of
    /// such runs failed longer ago than this, the failing run throws <see cref="EtlOutageLimitExceededException"/> (the
    /// outage's error inside), the job logs it as an error and stops: its schedule waits, and <see cref="EtlJobsHealthCheck"/>
    /// reports it unhealthy (degraded while it fails on an outage within the limit). A run started on demand
    /// (<see cref="IEtlJobs.RunAsync"/>) still runs it; once one succeeds, the job is healthy and its schedule resumes. A
    /// run that ends any other way (completed, stopped, failed for another reason) ends the series.
    /// </summary>
    /// <value>Default <see langword="null"/>: no limit (the job keeps trying, degraded, for as long as the outage lasts).</value>
    public TimeSpan? MaxOutageDuration { get; set; }

    /// <summary>Gets the options of each run (partition, batch size, error budget, progress).</summary>
    public EtlRunOptions RunOptions { get; } = new();
}

internal sealed record EtlJobRegistration(string Name, Func<IServiceProvider, EtlPipeline> Pipeline, EtlJobOptions Options, CronExpression? Cron)
{
    public bool Scheduled => Options.Interval is not null || Cron is not null || Options.RunOnStart;
}

/// <summary>Runs the registered ETL jobs on demand.</summary>
public interface IEtlJobs
{
    /// <summary>Gets the names of the registered jobs.</summary>
    IReadOnlyList<string> Names { get; }

    /// <summary>Runs a job now; a job does not run twice at once (a second call waits for the first).</summary>
    /// <param name="name">The job.</param>
    /// <param name="options">Overrides the job's run options, or <see langword="null"/> for them.</param>
    /// <param name="cancellationToken">Stops the run gracefully.</param>
    /// <returns>The run's result.</returns>
    /// <exception cref="KeyNotFoundException">No job has that name; the message lists the jobs.</exception>
    Task<EtlRunResult> RunAsync(string name, EtlRunOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Gets the result of the job's last run that completed, or <see langword="null"/>.</summary>
    /// <param name="name">The job.</param>
    /// <returns>The result.</returns>
    EtlRunResult? LastResult(string name);
}

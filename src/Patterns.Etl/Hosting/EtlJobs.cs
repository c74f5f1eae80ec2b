using System.Collections.Concurrent;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Patterns.Etl;

/// <summary>The jobs of the host: runs them on demand and, as a hosted service, on their schedules.</summary>
internal sealed class EtlJobs(IEnumerable<EtlJobList> lists, IServiceProvider services, TimeProvider? time = null, ILoggerFactory? loggers = null) : BackgroundService, IEtlJobs
{
    private readonly Dictionary<string, EtlJobRegistration> _jobs = lists.SelectMany(l => l.Jobs).ToDictionary(j => j.Name, StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _gates = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, EtlRunResult> _last = new(StringComparer.Ordinal);
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly ILogger _logger = loggers?.CreateLogger("Patterns.Etl") ?? NullLogger.Instance;
    private TaskCompletionSource _waiting = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public IReadOnlyList<string> Names => [.. _jobs.Keys.Order(StringComparer.Ordinal)];

    public EtlRunResult? LastResult(string name) => _last.TryGetValue(name, out var result) ? result : null;

    public async Task<EtlRunResult> RunAsync(string name, EtlRunOptions? options = null, CancellationToken cancellationToken = default)
    {
        if (!_jobs.TryGetValue(name, out var job))
        {
            throw new KeyNotFoundException($"No ETL job is named '{name}'; the jobs are {string.Join(", ", Names.Select(n => $"'{n}'"))}.");
        }

        var gate = _gates.GetOrAdd(name, static _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var run = options ?? job.Options.RunOptions;
            run.TimeProvider ??= _time;
            run.LoggerFactory ??= loggers;
            var result = await job.Pipeline(services).RunAsync(run, cancellationToken).ConfigureAwait(false);
            _last[name] = result;
            return result;
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>Completes when a scheduled job next starts waiting on the clock (for tests on virtual time).</summary>
    internal Task NextWaitAsync() => Volatile.Read(ref _waiting).Task;

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Task.WhenAll(_jobs.Values.Where(j => j.Scheduled).Select(j => ScheduleAsync(j, stoppingToken)));

    private async Task ScheduleAsync(EtlJobRegistration job, CancellationToken stoppingToken)
    {
        var first = job.Options.RunOnStart;
        while (!stoppingToken.IsCancellationRequested)
        {
            if (!first)
            {
                var now = _time.GetUtcNow();
                DateTimeOffset? next = job.Options.Interval is { } interval ? now + interval : job.Cron?.GetNextOccurrence(now, job.Options.TimeZone);
                if (next is not { } at)
                {
                    return;
                }

                try
                {
                    var delay = Task.Delay(at - now, _time, stoppingToken);
                    Interlocked.Exchange(ref _waiting, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
                    await delay.ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }

            first = false;
            try
            {
                await RunAsync(job.Name, null, stoppingToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !stoppingToken.IsCancellationRequested)
            {
                // A failed run is logged; the schedule goes on, and the next run resumes at the last committed batch.
                EtlLog.ScheduledRunFailed(_logger, ex, job.Name);
            }
        }
    }
}

/// <summary>The jobs one <c>AddEtl</c> call registered.</summary>
internal sealed record EtlJobList(List<EtlJobRegistration> Jobs);

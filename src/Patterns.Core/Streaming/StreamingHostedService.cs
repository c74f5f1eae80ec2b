using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.EventSourcing;
using Patterns.Hosting;
using Patterns.Storage;

namespace Patterns.Streaming;

/// <summary>Runs the registered pipelines with the host; on shutdown stops them gracefully within the drain deadline.</summary>
internal sealed class StreamingHostedService(
    IOptions<StreamingTopology> topology,
    IServiceProvider services,
    IOptions<PatternsOptions> options,
    TimeProvider timeProvider,
    ILoggerFactory loggerFactory) : IHostedService, IDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly CancellationTokenSource _abort = new();
    private readonly List<Task> _running = [];
    private static readonly TimeSpan LeaseDuration = TimeSpan.FromSeconds(30);
    private readonly ILogger _logger = loggerFactory.CreateLogger<StreamingHostedService>();
    private readonly string _owner = EventProcessorOwner.Create();

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var store = services.GetService<IStreamSnapshotStore>();
        var leases = services.GetService<ILeaseStore>();
        var pipelines = topology.Value.Pipelines.Select(p => (p.Name, Pipeline: p.Factory(services))).ToList();
        var started = new List<Task>(pipelines.Count);
        foreach (var (name, pipeline) in pipelines)
        {
            var attached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            started.Add(attached.Task);
            _running.Add(Task.Run(
                () => leases is null ? RunOnceAsync(name, pipeline, store, attached, null, _stop.Token) : RunUnderLeaseAsync(leases, name, pipeline, store, attached),
                CancellationToken.None));
        }

        // Transport sources subscribe before the host counts as started, so nothing published after start is missed.
        await Task.WhenAll(started).WaitAsync(cancellationToken).ConfigureAwait(false);
        if (_running.Count > 0)
        {
            StreamingLog.PipelinesStarted(_logger, _running.Count);
        }
    }

    /// <summary>Runs a pipeline once; a failed pipeline is logged (by the pipeline) and ends, it must not take the host down.</summary>
    private async Task<bool> RunOnceAsync(string name, StreamPipeline pipeline, IStreamSnapshotStore? store, TaskCompletionSource attached, Lease? lease, CancellationToken stop)
    {
        try
        {
            await pipeline.RunHostedAsync(name, timeProvider, loggerFactory, store, attached, lease, stop, _abort.Token).ConfigureAwait(false);
            return true;
        }
        catch (LeaseLostException)
        {
            return false;
        }
#pragma warning disable CA1031 // A failed pipeline is logged (by the pipeline) and ends; it must not take the host down.
        catch (Exception)
#pragma warning restore CA1031
        {
            return true;
        }
    }

    /// <summary>
    /// With a store that has leases, a pipeline runs in one process at a time: this one runs it while it holds the lease
    /// <c>stream:{name}</c>, stands by otherwise, and starts again from the snapshot when it takes the lease over.
    /// </summary>
    private Task RunUnderLeaseAsync(ILeaseStore leases, string name, StreamPipeline pipeline, IStreamSnapshotStore? store, TaskCompletionSource attached) =>
        new LeaseRunner(leases, "stream:" + name, _owner, LeaseDuration, timeProvider).RunAsync(
            async (lease, owned) =>
            {
                var finished = await RunOnceAsync(name, pipeline, store, attached, lease, owned).ConfigureAwait(false);
                return finished && (_stop.IsCancellationRequested || !owned.IsCancellationRequested) ? LeaseRunner.Outcome.Done : LeaseRunner.Outcome.Lost;
            },
            () => attached.TrySetResult(),
            _ => StreamingLog.LeaseLost(_logger, name),
            ex => StreamingLog.LeaseError(_logger, ex, name),
            _stop.Token);

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        using var deadline = new CancellationTokenSource(options.Value.ShutdownTimeout, timeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token, cancellationToken);
        using (linked.Token.UnsafeRegister(static s => ((CancellationTokenSource)s!).Cancel(), _abort))
        {
            await Task.WhenAll(_running).ConfigureAwait(false);
        }

        _running.Clear();
    }

    public void Dispose()
    {
        _stop.Dispose();
        _abort.Dispose();
    }
}

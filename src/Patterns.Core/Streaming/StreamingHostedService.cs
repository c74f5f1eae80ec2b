using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.Hosting;

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
    private readonly ILogger _logger = loggerFactory.CreateLogger<StreamingHostedService>();

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var store = services.GetService<IStreamSnapshotStore>();
        var pipelines = topology.Value.Pipelines.Select(p => (p.Name, Pipeline: p.Factory(services))).ToList();
        var started = new List<Task>(pipelines.Count);
        foreach (var (name, pipeline) in pipelines)
        {
            var attached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            started.Add(attached.Task);
            _running.Add(Task.Run(
                async () =>
                {
                    try
                    {
                        await pipeline.RunHostedAsync(name, timeProvider, loggerFactory, store, attached, _stop.Token, _abort.Token).ConfigureAwait(false);
                    }
#pragma warning disable CA1031 // A failed pipeline is logged (by the pipeline) and ends; it must not take the host down.
                    catch (Exception)
#pragma warning restore CA1031
                    {
                    }
                },
                CancellationToken.None));
        }

        // Transport sources subscribe before the host counts as started, so nothing published after start is missed.
        await Task.WhenAll(started).WaitAsync(cancellationToken).ConfigureAwait(false);
        if (_running.Count > 0)
        {
            StreamingLog.PipelinesStarted(_logger, _running.Count);
        }
    }

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

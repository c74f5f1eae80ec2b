using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.Hosting;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Batching;

/// <summary>
/// Starts the batch consumers with the host, and on shutdown stops them and completes every registered batcher:
/// open batches are flushed and handled within <see cref="PatternsOptions.ShutdownTimeout"/>.
/// </summary>
internal sealed class BatchingHostedService(
    IOptions<BatchingTopology> topology,
    IServiceProvider services,
    MessageBus bus,
    IMessageSerializer serializer,
    IOptions<PatternsOptions> options,
    ILoggerFactory loggerFactory) : IHostedLifecycleService
{
    private readonly ILogger _logger = loggerFactory.CreateLogger<BatchingHostedService>();
    private readonly List<(TransportSubscription Subscription, IBatchConsumer Consumer)> _consumers = [];
    private readonly List<Func<CancellationToken, Task>> _batchers = [];

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var value = topology.Value;
        foreach (var batcher in value.Batchers)
        {
            _batchers.Add(batcher.Resolve(services));
        }

        var transport = bus.Transport;
        try
        {
            foreach (var registration in value.Consumers)
            {
                var group = registration.ConsumerGroup;
                var logger = loggerFactory.CreateLogger("Patterns.Batching." + group);
                // Stopping is the host's (MessagingHostedService learns it first, before any hosted service stops).
                var stop = services.GetService<MessagingHostedService>() is { } messaging ? new ConsumerStop(() => messaging.HostStopping) : null;
                var consumer = registration.Create(new BatchConsumerContext(services, bus, serializer, logger, group, stop));
                var o = registration.Options;
                var request = new SubscriptionRequest
                {
                    Address = registration.Address,
                    ConsumerGroup = group,
                    // One batch fills while HandlerConcurrency batches are handled.
                    Concurrency = o.MaxCount * (o.HandlerConcurrency + 1),
                    Capacity = o.Capacity,
                    FullMode = QueueFullMode.Wait,
                    DeadLetterCapacity = o.DeadLetterCapacity,
                    SettlesLater = true,
                };
                TransportSubscription subscription;
                try
                {
                    subscription = await bus.SubscribeAsync(request, consumer.Handler, cancellationToken).ConfigureAwait(false);
                }
                catch
                {
                    await consumer.CompleteAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);
                    throw;
                }

                stop?.Bind(subscription);
                _consumers.Add((subscription, consumer));
            }
        }
        catch
        {
            await StopCoreAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);
            throw;
        }

        if (_consumers.Count > 0)
        {
            BatchingLog.ConsumersStarted(_logger, _consumers.Count, transport.SystemName);
        }
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// As the host begins to stop, each subscription is told (<see cref="TransportSubscription.BeginDrain"/>): the in-memory
    /// ones keep what the batch handlers release until they are unbound, so that a message released by a handler whose
    /// component stopped first does not come straight back to it.
    /// </summary>
    public Task StoppingAsync(CancellationToken cancellationToken)
    {
        foreach (var (subscription, _) in _consumers)
        {
            subscription.BeginDrain();
        }

        return Task.CompletedTask;
    }

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        using var deadline = new CancellationTokenSource(options.Value.ShutdownTimeout, bus.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token, cancellationToken);
        await StopCoreAsync(linked.Token).ConfigureAwait(false);
    }

    private async Task StopCoreAsync(CancellationToken deadline)
    {
        var stopping = new List<Task>(2 * _consumers.Count + _batchers.Count);
        foreach (var (subscription, consumer) in _consumers)
        {
            stopping.Add(StopConsumerAsync(subscription, consumer, deadline));
        }

        foreach (var complete in _batchers)
        {
            stopping.Add(complete(deadline));
        }

        await Task.WhenAll(stopping).ConfigureAwait(false);
        _consumers.Clear();
        _batchers.Clear();
    }

    private static async Task StopConsumerAsync(TransportSubscription subscription, IBatchConsumer consumer, CancellationToken deadline)
    {
        // The subscription stops taking messages and drains what it already holds; the consumer flushes each batch
        // as those deliveries arrive, so every drained message is handled and settled. Then the consumer completes.
        consumer.BeginDrain(deadline);
        await subscription.StopAsync(deadline).ConfigureAwait(false);
        await consumer.CompleteAsync(deadline).ConfigureAwait(false);
    }
}

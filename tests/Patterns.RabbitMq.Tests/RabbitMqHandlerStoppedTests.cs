using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.Transport;

namespace Patterns.RabbitMq.Tests;

/// <summary>
/// A handler that gives its message up because its host stops (<see cref="HandlerStoppedException"/>) while the host's
/// consumers still run: the broker would hand the released message straight back to the same consumer, which would
/// release it again, for as long as the host's other services take to stop. The consumer stops taking deliveries after
/// the first such release, and hands the release back only once the broker confirmed that, so the message waits on the
/// broker for another process.
/// </summary>
public sealed class RabbitMqHandlerStoppedTests
{
    [Theory]
    [InlineData(1)] // handled inline, in the client's consumer dispatcher
    [InlineData(4)] // handled by the subscription's workers
    public async Task AHandlerStoppedWithItsHost_StopsItsConsumer_TheReleasedMessageIsNotDeliveredAgainAndAgain(int concurrency)
    {
        await Broker.RequireAsync();
        var prefix = Broker.Prefix("stop-loop");
        var deliveries = 0;
        var looped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var component = new SlowStoppingComponent(looped.Task);
        await using var first = await RabbitHost.StartWithPrefixAsync(prefix, b =>
        {
            b.AddMessageQueue(q => q.AddConsumer<WorkItem>("handover", (_, _, _) =>
            {
                if (Interlocked.Increment(ref deliveries) >= 5)
                {
                    looped.TrySetResult();
                }

                // The component this handler needs has stopped (the message is sent only once it has).
                throw new HandlerStoppedException("the component stopped");
            }, o =>
            {
                o.MaxRedeliveries = 0;
                o.Concurrency = concurrency;
            }));
            b.Services.AddSingleton<IHostedService>(component);
        });
        component.Sender = first.Get<IQueueSender>();

        await first.Host.StopAsync().WaitAsync(RabbitHost.Wait);

        // Exactly one: the message is sent once, and its release is published (to the retry queue this consumer also
        // consumes) only after the broker confirmed the cancel of both of this consumer's basic.consumes, so no copy of it
        // can reach the stopping consumer; no prefetch or concurrency allowance applies to a message that is not yet there.
        Volatile.Read(ref deliveries).Should().Be(1, "after the first release the stopping consumer takes no more deliveries; the message is left for another process");
        var received = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var next = await RabbitHost.StartWithPrefixAsync(prefix, b => b.AddMessageQueue(q => q.AddConsumer<WorkItem>("handover", (_, context, _) =>
        {
            received.TrySetResult(context.Envelope);
            return default;
        }, o => o.MaxRedeliveries = 0)));
        var envelope = await received.Task.WaitAsync(RabbitHost.Wait);
        envelope.DeliveryCount.Should().Be(0, "a release counts no delivery");
        envelope.TryGetHeader(EnvelopeHeaders.Released, out _).Should().BeTrue();
    }

    /// <summary>
    /// Stops before the host's consumers (registered after AddPatterns), sends the message its host's handler will refuse,
    /// then holds the host's stop open, as a slow service stopping between a component and the consumers does: until the
    /// handler saw the message five times (the loop), or for a bounded while when it does not come again.
    /// </summary>
    private sealed class SlowStoppingComponent(Task looped) : IHostedService
    {
        private int _stops;

        public IQueueSender? Sender { get; set; }

        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public async Task StopAsync(CancellationToken cancellationToken)
        {
            if (Interlocked.Increment(ref _stops) > 1)
            {
                return; // the host is disposed after its stop, and stopped again
            }

            await Sender!.SendAsync("handover", new WorkItem(1), cancellationToken: CancellationToken.None);
            try
            {
                // Waiting for something that must not happen can only be bounded by time; no timing is asserted.
                await looped.WaitAsync(TimeSpan.FromSeconds(3), CancellationToken.None);
            }
            catch (TimeoutException)
            {
            }
        }
    }
}

using System.Runtime.CompilerServices;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Testing;

/// <summary>A message the application sent or published, as the transport accepted it.</summary>
/// <param name="Address">The queue or topic it went to.</param>
/// <param name="Envelope">The message.</param>
public sealed record RecordedMessage(TransportAddress Address, Envelope Envelope);

/// <summary>One delivery to a consumer group and how it was settled.</summary>
/// <param name="ConsumerGroup">The consumer group that handled it.</param>
/// <param name="Envelope">The message.</param>
/// <param name="Outcome">Ack, retry or dead-letter.</param>
/// <param name="Exception">The failure, when the outcome is not an ack.</param>
public sealed record RecordedDelivery(string ConsumerGroup, Envelope Envelope, SettlementKind Outcome, Exception? Exception);

/// <summary>
/// Records what went through the transport: every send and publish, and every delivery with its
/// settlement. Register it with <see cref="PatternsTestingExtensions.UseTestHarness"/> and resolve it from DI.
/// </summary>
/// <remarks>Thread-safe. Waits complete on signals from the transport, never by polling or sleeping.</remarks>
public sealed class PatternsTestHarness
{
    private readonly Lock _gate = new();
    private readonly IMessageSerializer? _serializer;
    private readonly MessageTypeRegistry? _registry;
    private readonly List<RecordedMessage> _sent = [];
    private readonly List<RecordedDelivery> _deliveries = [];
    private readonly List<(Func<PatternsTestHarness, bool> Condition, TaskCompletionSource Signal)> _waiters = [];

    /// <summary>Initializes a new instance of the <see cref="PatternsTestHarness"/> class that reads message bodies only as they were sent in-process.</summary>
    public PatternsTestHarness()
    {
    }

    internal PatternsTestHarness(IMessageSerializer? serializer, MessageTypeRegistry? registry)
    {
        _serializer = serializer;
        _registry = registry;
    }

    /// <summary>Gets or sets how long a wait lasts before it fails with a <see cref="TimeoutException"/> naming what it waited for.</summary>
    /// <value>Default 30 seconds; <see cref="Timeout.InfiniteTimeSpan"/> for no limit.</value>
    public TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Gets a snapshot of every message sent or published so far, in the order the transport accepted them.</summary>
    public IReadOnlyList<RecordedMessage> Sent
    {
        get
        {
            lock (_gate)
            {
                return [.. _sent];
            }
        }
    }

    /// <summary>Gets a snapshot of every delivery settled so far, in settlement order.</summary>
    public IReadOnlyList<RecordedDelivery> Deliveries
    {
        get
        {
            lock (_gate)
            {
                return [.. _deliveries];
            }
        }
    }

    /// <summary>Gets the bodies of type <typeparamref name="TMessage"/> that were handled successfully (acked).</summary>
    /// <typeparam name="TMessage">The message type.</typeparam>
    /// <returns>The bodies, in settlement order.</returns>
    public IReadOnlyList<TMessage> Consumed<TMessage>()
    {
        RecordedDelivery[] acked;
        lock (_gate)
        {
            acked = [.. _deliveries.Where(d => d.Outcome == SettlementKind.Ack)];
        }

        // In-process the body is the object sent; a broker delivers bytes, read here with the host's serializer.
        var name = _registry?.GetName(typeof(TMessage));
        var result = new List<TMessage>(acked.Length);
        foreach (var delivery in acked)
        {
            if (delivery.Envelope.Body is TMessage typed)
            {
                result.Add(typed);
            }
            else if (delivery.Envelope.Body is null && _serializer is not null && name is not null
                && string.Equals(delivery.Envelope.MessageType, name, StringComparison.Ordinal) && !delivery.Envelope.Payload.IsEmpty)
            {
                result.Add((TMessage)_serializer.Deserialize(delivery.Envelope.Payload, typeof(TMessage)));
            }
        }

        return result;
    }

    /// <summary>Waits until a condition over the recorded traffic holds, for at most <see cref="DefaultTimeout"/>.</summary>
    /// <param name="condition">Checked now and after every recorded event.</param>
    /// <param name="cancellationToken">Ends the wait with <see cref="OperationCanceledException"/>.</param>
    /// <param name="conditionText">What is awaited, for the timeout's message; the condition's source text by default.</param>
    /// <returns>A task that completes when the condition holds.</returns>
    /// <exception cref="TimeoutException">The condition did not hold within <see cref="DefaultTimeout"/>; the message names it.</exception>
    public Task WaitUntilAsync(
        Func<PatternsTestHarness, bool> condition,
        CancellationToken cancellationToken = default,
        [CallerArgumentExpression(nameof(condition))] string? conditionText = null)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            if (condition(this))
            {
                return Task.CompletedTask;
            }

            _waiters.Add((condition, signal));
        }

        return WithTimeoutAsync(signal, conditionText ?? "a condition", cancellationToken);
    }

    /// <summary>Waits until at least <paramref name="count"/> deliveries matching <paramref name="predicate"/> are settled, for at most <see cref="DefaultTimeout"/>.</summary>
    /// <param name="count">How many.</param>
    /// <param name="predicate">Which deliveries count; all when <see langword="null"/>.</param>
    /// <param name="cancellationToken">Ends the wait with <see cref="OperationCanceledException"/>.</param>
    /// <param name="predicateText">What counts, for the timeout's message; the predicate's source text by default.</param>
    /// <returns>A task that completes when enough deliveries are settled.</returns>
    /// <exception cref="TimeoutException">Fewer deliveries were settled within <see cref="DefaultTimeout"/>; the message says how many of how many.</exception>
    public Task WaitForDeliveriesAsync(
        int count,
        Func<RecordedDelivery, bool>? predicate = null,
        CancellationToken cancellationToken = default,
        [CallerArgumentExpression(nameof(predicate))] string? predicateText = null) =>
        WaitUntilAsync(
            h => h.CountDeliveries(predicate) >= count,
            cancellationToken,
            $"{count} settled deliveries{(predicate is null ? string.Empty : $" matching {predicateText}")}");

    private async Task WithTimeoutAsync(TaskCompletionSource signal, string what, CancellationToken cancellationToken)
    {
        try
        {
            await signal.Task.WaitAsync(DefaultTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException ex)
        {
            lock (_gate)
            {
                _waiters.RemoveAll(w => w.Signal == signal);
            }

            throw new TimeoutException(
                $"The test harness waited {DefaultTimeout} for {what}, in vain: {Deliveries.Count} deliveries settled and {Sent.Count} messages sent so far.", ex);
        }
    }

    internal void RecordSent(TransportAddress address, in Envelope envelope)
    {
        lock (_gate)
        {
            _sent.Add(new RecordedMessage(address, envelope));
        }

        Signal();
    }

    internal void RecordDelivery(string group, in Envelope envelope, in Settlement settlement)
    {
        lock (_gate)
        {
            _deliveries.Add(new RecordedDelivery(group, envelope, settlement.Kind, settlement.Exception));
        }

        Signal();
    }

    private int CountDeliveries(Func<RecordedDelivery, bool>? predicate)
    {
        // Called under _gate by WaitUntilAsync and Signal.
        return predicate is null ? _deliveries.Count : _deliveries.Count(predicate);
    }

    private void Signal()
    {
        List<TaskCompletionSource>? ready = null;
        lock (_gate)
        {
            for (var i = _waiters.Count - 1; i >= 0; i--)
            {
                if (_waiters[i].Condition(this))
                {
                    (ready ??= []).Add(_waiters[i].Signal);
                    _waiters.RemoveAt(i);
                }
            }
        }

        if (ready is not null)
        {
            foreach (var signal in ready)
            {
                signal.TrySetResult();
            }
        }
    }
}

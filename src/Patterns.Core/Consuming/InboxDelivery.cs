namespace Patterns.Consuming;

/// <summary>
/// The message the kernel's consumer path is handling with de-duplication on (<see cref="Hosting.PatternsOptions.Deduplicate"/>),
/// as an ambient value for the handler's store session: its first commit claims the message in the consumer group's inbox
/// in the same transaction as the handler's writes (<see cref="Storage.UnitOfWork.ClaimInbox"/>), so two copies handled
/// at once (two processes past the inbox check together) cannot both commit: the second one's commit fails with
/// <see cref="Storage.DuplicateMessageException"/>, which the consumer settles as handled, with no effect.
/// </summary>
internal sealed class InboxDelivery(string group, string messageId)
{
    private static readonly AsyncLocal<InboxDelivery?> Ambient = new();

    /// <summary>Gets the delivery being handled on this flow, if any.</summary>
    public static InboxDelivery? Current => Ambient.Value;

    /// <summary>Gets the consumer group (the inbox's consumer).</summary>
    public string Group { get; } = group;

    /// <summary>Gets the message id.</summary>
    public string MessageId { get; } = messageId;

    /// <summary>Gets or sets a value indicating whether a commit of this delivery's handler claimed the message already, or the handling ended (a later commit does not claim it again).</summary>
    public bool Claimed { get; set; }

    /// <summary>Makes <paramref name="delivery"/> the ambient one for the flow that follows (the caller's async method restores it on return).</summary>
    public static void Enter(InboxDelivery? delivery) => Ambient.Value = delivery;
}
